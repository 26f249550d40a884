//! The `cnn!` proc-macro (front end in Rust source).
