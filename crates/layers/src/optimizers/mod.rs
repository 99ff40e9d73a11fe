//! Optimizers with Keras 3's update formulas and defaults.
