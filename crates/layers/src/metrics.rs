//! Metrics with Keras 3's semantics.
