//! Losses with Keras 3's formulas.
