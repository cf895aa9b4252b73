//! [`FletchConverter`]: datafusion-proto's conversion, except where it would change what
//! a stage means on an executor: literals it retypes ([`super::literals`]) and file scan
//! options it drops ([`super::file_options`]) travel as Fletch nodes instead.
//!
//! datafusion-proto 55 encodes the children of an extension-codec node without the
//! converter, so Fletch's own nodes are encoded here, their children through it: a file
//! scan under an exchange writer keeps its options too.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{
    PhysicalExprNode, PhysicalExtensionNode, PhysicalPlanNode, physical_plan_node,
};
use prost::Message;

use super::{FletchNode, file_options, fletch_node, literals};

pub(super) struct FletchConverter;

impl FletchConverter {
    /// `plan` as an extension node with its children encoded by this converter, if the
    /// codec encodes it (one of Fletch's own nodes). A Fletch node the codec refuses
    /// falls through to datafusion-proto, which asks the codec again and reports why.
    fn fletch_node_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<Option<PhysicalPlanNode>> {
        let mut node = Vec::new();
        if codec.try_encode(Arc::clone(plan), &mut node, self).is_err() {
            return Ok(None);
        }
        let inputs = plan
            .children()
            .into_iter()
            .map(|child| self.execution_plan_to_proto(child, codec))
            .collect::<Result<_>>()?;
        Ok(Some(extension(node, inputs)))
    }
}

fn extension(node: Vec<u8>, inputs: Vec<PhysicalPlanNode>) -> PhysicalPlanNode {
    PhysicalPlanNode {
        physical_plan_type: Some(physical_plan_node::PhysicalPlanType::Extension(
            PhysicalExtensionNode { node, inputs },
        )),
    }
}

impl PhysicalProtoConverterExtension for FletchConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalPlanNode> {
        if let Some(node) = self.fletch_node_to_proto(plan, codec)? {
            return Ok(node);
        }
        let encoded =
            PhysicalPlanNode::try_from_physical_plan_with_converter(Arc::clone(plan), codec, self)?;
        let Some(options) = file_options::lost_in_proto(plan) else {
            return Ok(encoded);
        };
        let node = FletchNode {
            kind: Some(fletch_node::Kind::ScanOptions(options)),
        };
        Ok(extension(node.encode_to_vec(), vec![encoded]))
    }

    fn proto_to_physical_expr(
        &self,
        proto: &PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalExprNode> {
        match literals::encode_literal(expr) {
            Some(node) => Ok(node),
            None => serialize_physical_expr_with_converter(expr, codec, self),
        }
    }
}
