//! A reader's [`PlanProperties`] on the wire: everything the coordinator's optimiser may
//! have relied on when it planned the operators above the subtree the reader replaces.
//! An executor's instance of those operators must see the same orderings (all of them,
//! not only the normalised first), equivalences and constants, or an operator planned
//! for a sorted input (a window over five partition columns, say) finds four of them
//! ordered and fails.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::{Result, ScalarValue, plan_datafusion_err};
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, LexOrdering, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{Partitioning, PlanProperties};
use datafusion_proto::physical_plan::from_proto::parse_physical_sort_exprs;
use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub(super) struct PropertiesNode {
    /// Every ordering the output satisfies, as the coordinator's plan lists them.
    #[prost(message, repeated, tag = "1")]
    orderings: Vec<protobuf::PhysicalSortExprNodeCollection>,
    /// Classes of expressions known to be equal row by row.
    #[prost(message, repeated, tag = "2")]
    equivalences: Vec<ExprList>,
    #[prost(message, repeated, tag = "3")]
    constants: Vec<ConstantNode>,
    /// 0: incremental, 1: final, 2: both.
    #[prost(uint32, tag = "4")]
    emission: u32,
}

#[derive(Clone, PartialEq, Message)]
struct ExprList {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<protobuf::PhysicalExprNode>,
}

#[derive(Clone, PartialEq, Message)]
struct ConstantNode {
    #[prost(message, optional, tag = "1")]
    expr: Option<protobuf::PhysicalExprNode>,
    /// Whether every partition holds the same value (which `value` gives, if known).
    #[prost(bool, tag = "2")]
    uniform: bool,
    #[prost(message, optional, tag = "3")]
    value: Option<protobuf::ScalarValue>,
}

pub(super) fn encode(
    properties: &PlanProperties,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<PropertiesNode> {
    let eq = &properties.eq_properties;
    let orderings = eq
        .oeq_class()
        .iter()
        .map(|ordering| {
            Ok(protobuf::PhysicalSortExprNodeCollection {
                physical_sort_expr_nodes: serialize_physical_sort_exprs(
                    ordering.iter().cloned(),
                    codec,
                    converter,
                )?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let equivalences = eq
        .eq_group()
        .iter()
        .filter(|class| class.len() > 1)
        .map(|class| {
            Ok(ExprList {
                exprs: class
                    .iter()
                    .map(|e| converter.physical_expr_to_proto(e, codec))
                    .collect::<Result<_>>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let constants = eq
        .constants()
        .into_iter()
        .map(|c| {
            let (uniform, value) = match &c.across_partitions {
                AcrossPartitions::Heterogeneous => (false, None),
                AcrossPartitions::Uniform(value) => (true, value.as_ref()),
            };
            Ok(ConstantNode {
                expr: Some(converter.physical_expr_to_proto(&c.expr, codec)?),
                uniform,
                value: value
                    .map(protobuf::ScalarValue::try_from)
                    .transpose()
                    .map_err(|e| plan_datafusion_err!("constant of a reader: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let emission = match properties.emission_type {
        EmissionType::Incremental => 0,
        EmissionType::Final => 1,
        EmissionType::Both => 2,
    };
    Ok(PropertiesNode {
        orderings,
        equivalences,
        constants,
        emission,
    })
}

pub(super) fn decode(
    node: &PropertiesNode,
    schema: &SchemaRef,
    partitioning: Partitioning,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<PlanProperties> {
    let mut eq = EquivalenceProperties::new(Arc::clone(schema));
    for class in &node.equivalences {
        let exprs = class
            .exprs
            .iter()
            .map(|e| converter.proto_to_physical_expr(e, schema, ctx))
            .collect::<Result<Vec<_>>>()?;
        for pair in exprs.windows(2) {
            eq.add_equal_conditions(Arc::clone(&pair[0]), Arc::clone(&pair[1]))?;
        }
    }
    let constants = node
        .constants
        .iter()
        .map(|c| {
            let expr = c
                .expr
                .as_ref()
                .ok_or_else(|| plan_datafusion_err!("reader constant without an expression"))?;
            let expr = converter.proto_to_physical_expr(expr, schema, ctx)?;
            let across = if c.uniform {
                AcrossPartitions::Uniform(
                    c.value
                        .as_ref()
                        .map(ScalarValue::try_from)
                        .transpose()
                        .map_err(|e| plan_datafusion_err!("reader constant value: {e}"))?,
                )
            } else {
                AcrossPartitions::Heterogeneous
            };
            Ok(ConstExpr::new(expr, across))
        })
        .collect::<Result<Vec<_>>>()?;
    eq.add_constants(constants)?;
    let orderings = node
        .orderings
        .iter()
        .map(|o| parse_physical_sort_exprs(&o.physical_sort_expr_nodes, ctx, schema, converter))
        .collect::<Result<Vec<Vec<PhysicalSortExpr>>>>()?;
    eq.add_orderings(orderings.into_iter().filter_map(LexOrdering::new));
    let emission = match node.emission {
        0 => EmissionType::Incremental,
        1 => EmissionType::Final,
        2 => EmissionType::Both,
        other => return Err(plan_datafusion_err!("unknown emission type {other}")),
    };
    Ok(PlanProperties::new(
        eq,
        partitioning,
        emission,
        Boundedness::Bounded,
    ))
}
