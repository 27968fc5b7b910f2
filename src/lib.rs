//! stub
pub use tidings_core::*;
