//! Literals datafusion-proto 55 does not keep: it sends a `Float16` value as a `Float32`
//! one, so `float16_column + 1` decodes as `Float16 + Float32`, which arrow cannot
//! evaluate. [`encode_literal`] sends such literals as Fletch expressions instead, and
//! [`decode_literal`] rebuilds them exactly.

use std::sync::Arc;

use arrow::datatypes::{ArrowPrimitiveType, Float16Type};
use datafusion::common::{Result, ScalarValue, plan_datafusion_err};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalExtensionExprNode, physical_expr_node};
use prost::Message;

/// A literal datafusion-proto would change, as a Fletch extension expression.
#[derive(Clone, PartialEq, Message)]
struct LiteralNode {
    #[prost(oneof = "literal_node::Value", tags = "1")]
    value: Option<literal_node::Value>,
}

mod literal_node {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Value {
        /// The bits of a non-null `Float16`.
        #[prost(uint32, tag = "1")]
        Float16(u32),
    }
}

/// `expr` as a Fletch extension expression, if it is a literal datafusion-proto would
/// change.
pub(super) fn encode_literal(expr: &Arc<dyn PhysicalExpr>) -> Option<PhysicalExprNode> {
    let value = expr
        .downcast_ref::<Literal>()
        .and_then(|literal| match literal.value() {
            ScalarValue::Float16(Some(v)) => {
                Some(literal_node::Value::Float16(u32::from(v.to_bits())))
            }
            _ => None,
        })?;
    Some(PhysicalExprNode {
        expr_id: None,
        expr_type: Some(physical_expr_node::ExprType::Extension(
            PhysicalExtensionExprNode {
                expr: LiteralNode { value: Some(value) }.encode_to_vec(),
                inputs: vec![],
            },
        )),
    })
}

/// Rebuilds a literal [`encode_literal`] sent.
pub(super) fn decode_literal(buf: &[u8]) -> Result<Arc<dyn PhysicalExpr>> {
    let node = LiteralNode::decode(buf)
        .map_err(|e| plan_datafusion_err!("malformed Fletch expression: {e}"))?;
    let value = match node.value {
        Some(literal_node::Value::Float16(bits)) => {
            let bits = u16::try_from(bits)
                .map_err(|_| plan_datafusion_err!("Float16 literal with {bits} as its bits"))?;
            ScalarValue::Float16(Some(
                <Float16Type as ArrowPrimitiveType>::Native::from_bits(bits),
            ))
        }
        None => return Err(plan_datafusion_err!("Fletch expression without a value")),
    };
    Ok(Arc::new(Literal::new(value)))
}
