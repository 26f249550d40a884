//! The graph IR: one closed [`Op`] enum, typed node ids, fixed shapes, shape inference, a
//! verifier and a text dump.

pub mod dump;
pub mod graph;
pub mod op;
pub mod rebatch;
pub mod shape;
pub mod verify;

pub use dump::dump;
pub use graph::{Graph, GraphOutput, Layer, Mode, Node, NodeId, OutputRole, Shape};
pub use op::{Activation, LossKind, Moment, Op, Pad2d, ParamRole, Window2d};
pub use rebatch::rebatch;
pub use shape::{infer_shape, window_hw, ShapeError};
pub use verify::{assert_valid, verify};
