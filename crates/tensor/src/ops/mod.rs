//! The ops, one file per family. Each file holds the family's recorded op
//! enum (the attributes its gradient rules need), its public methods with
//! doc examples, and its tests. The gradient rules for a family live in the
//! file of the same name under rime-tape's `rules/`.

pub mod arith;
pub mod conv;
pub mod dense;
pub mod index;
pub mod layout;
pub mod matmul;
pub mod nn;
pub mod operators;
pub mod pool;
pub mod reduce;
pub mod unary;
