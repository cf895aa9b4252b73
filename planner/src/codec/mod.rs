//! [`FletchCodec`]: how Fletch's own plan nodes cross the wire inside datafusion-proto
//! plans. Messages are prost-derived (no protoc); readers travel as leaves, so a stage's
//! bytes never contain another stage, and scans travel as file references or, for
//! in-memory tables, as the list of fragment pieces to read.

use std::sync::Arc;

use arrow::datatypes::Schema;
use bytes::Bytes;
use datafusion::common::{Result, internal_err, plan_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

mod converter;
mod file_options;
mod grouping_sets;
mod literals;
mod properties;
mod series;

use crate::declared::DeclaredPropertiesExec;
use crate::exchange::{ExchangeMode, ExchangeReaderExec, ShuffleWriterExec};
use crate::fragment::{FragmentLayout, FragmentScanExec, FragmentWriterExec, TableSnapshot};

/// Encodes and decodes [`ShuffleWriterExec`] and [`ExchangeReaderExec`].
#[derive(Debug, Default)]
pub struct FletchCodec;

/// Serializes a stage's plan (as in [`crate::Stage::plan`]) once, for all its tasks.
pub fn encode_stage_plan(plan: &Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    grouping_sets::check_encodable(plan)?;
    let plan = series::unproject_generators(plan)?;
    physical_plan_to_bytes_with_proto_converter(plan, &FletchCodec, &converter::FletchConverter)
}

/// Rebuilds a stage's plan from [`encode_stage_plan`]'s bytes.
pub fn decode_stage_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = physical_plan_from_bytes_with_extension_codec(bytes, ctx, &FletchCodec)?;
    grouping_sets::restore_empty_set(plan)
}

#[derive(Clone, PartialEq, Message)]
struct FletchNode {
    #[prost(oneof = "fletch_node::Kind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<fletch_node::Kind>,
}

mod fletch_node {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(message, tag = "1")]
        Writer(super::WriterNode),
        #[prost(message, tag = "2")]
        Reader(super::ReaderNode),
        #[prost(message, tag = "3")]
        Scan(super::ScanNode),
        #[prost(message, tag = "4")]
        FragmentWriter(super::FragmentWriterNode),
        #[prost(message, tag = "5")]
        Declared(super::properties::PropertiesNode),
        #[prost(message, tag = "6")]
        ScanOptions(super::file_options::ScanOptionsNode),
    }
}

#[derive(Clone, PartialEq, Message)]
struct WriterNode {
    #[prost(uint64, tag = "1")]
    stage_id: u64,
    /// Absent: forward.
    #[prost(message, optional, tag = "2")]
    output: Option<protobuf::Partitioning>,
}

#[derive(Clone, PartialEq, Message)]
struct ReaderNode {
    #[prost(uint64, tag = "1")]
    stage_id: u64,
    /// Zero: forward; otherwise a shuffle from this many upstream tasks.
    #[prost(uint64, tag = "2")]
    shuffle_upstream_tasks: u64,
    #[prost(message, optional, tag = "3")]
    schema: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "4")]
    partitioning: Option<protobuf::Partitioning>,
    /// The replaced subtree's orderings, equivalences and constants.
    #[prost(message, optional, tag = "6")]
    properties: Option<properties::PropertiesNode>,
    /// Empty: the reader interleaves its upstream streams; otherwise it merges them on
    /// this ordering.
    #[prost(message, repeated, tag = "7")]
    merge_by: Vec<protobuf::PhysicalSortExprNode>,
}

#[derive(Clone, PartialEq, Message)]
struct LayoutNode {
    /// Absent: round robin.
    #[prost(message, optional, tag = "1")]
    hash_keys: Option<ColumnList>,
    #[prost(message, repeated, tag = "2")]
    holders: Vec<HolderList>,
}

#[derive(Clone, PartialEq, Message)]
struct ColumnList {
    #[prost(uint64, repeated, tag = "1")]
    columns: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct HolderList {
    #[prost(string, repeated, tag = "1")]
    urls: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScanNode {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    table_uid: String,
    #[prost(message, optional, tag = "3")]
    schema: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "4")]
    layout: Option<LayoutNode>,
    /// Per fragment, the loads to read.
    #[prost(message, repeated, tag = "5")]
    loads: Vec<ColumnList>,
    /// Absent: every column.
    #[prost(message, optional, tag = "6")]
    projection: Option<ColumnList>,
}

#[derive(Clone, PartialEq, Message)]
struct FragmentWriterNode {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    table_uid: String,
    #[prost(uint64, tag = "3")]
    load: u64,
    #[prost(message, optional, tag = "4")]
    layout: Option<LayoutNode>,
}

fn encode_layout(layout: &FragmentLayout) -> LayoutNode {
    LayoutNode {
        hash_keys: layout.hash_keys.as_ref().map(|k| ColumnList {
            columns: k.iter().map(|&c| c as u64).collect(),
        }),
        holders: layout
            .holders
            .iter()
            .map(|urls| HolderList { urls: urls.clone() })
            .collect(),
    }
}

fn decode_layout(node: Option<LayoutNode>, columns: usize) -> Result<FragmentLayout> {
    let node = node.ok_or_else(|| plan_datafusion_err!("fragment node without a layout"))?;
    let hash_keys = node
        .hash_keys
        .map(|k| decode_columns(&k, columns))
        .transpose()?;
    Ok(FragmentLayout {
        hash_keys,
        holders: node.holders.into_iter().map(|h| h.urls).collect(),
    })
}

/// Column indices, each checked against the number of columns they index.
fn decode_columns(list: &ColumnList, columns: usize) -> Result<Vec<usize>> {
    list.columns
        .iter()
        .map(|&c| {
            let c = to_usize(c)?;
            if c >= columns {
                return Err(plan_datafusion_err!(
                    "column {c} out of range: the table has {columns} columns"
                ));
            }
            Ok(c)
        })
        .collect()
}

impl PhysicalExtensionCodec for FletchCodec {
    fn try_decode_expr(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn PhysicalExpr>],
        _ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        literals::decode_literal(buf)
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = FletchNode::decode(buf)
            .map_err(|e| plan_datafusion_err!("malformed Fletch plan node: {e}"))?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        match node.kind {
            Some(fletch_node::Kind::Writer(w)) => {
                let [input] = inputs else {
                    return internal_err!(
                        "ShuffleWriterExec needs one input, got {}",
                        inputs.len()
                    );
                };
                let output = parse_protobuf_partitioning(
                    w.output.as_ref(),
                    &decode_ctx,
                    &input.schema(),
                    proto_converter,
                )?;
                let stage_id = to_usize(w.stage_id)?;
                Ok(Arc::new(ShuffleWriterExec::try_new(
                    stage_id,
                    Arc::clone(input),
                    output,
                )?))
            }
            Some(fletch_node::Kind::Reader(r)) => {
                let schema: Schema = r
                    .schema
                    .as_ref()
                    .ok_or_else(|| plan_datafusion_err!("exchange reader without a schema"))?
                    .try_into()
                    .map_err(|e| plan_datafusion_err!("exchange reader schema: {e}"))?;
                let schema = Arc::new(schema);
                let partitioning = parse_protobuf_partitioning(
                    r.partitioning.as_ref(),
                    &decode_ctx,
                    &schema,
                    proto_converter,
                )?
                .ok_or_else(|| plan_datafusion_err!("exchange reader without partitioning"))?;
                let properties = properties::decode(
                    r.properties.as_ref().ok_or_else(|| {
                        plan_datafusion_err!("exchange reader without properties")
                    })?,
                    &schema,
                    partitioning,
                    &decode_ctx,
                    proto_converter,
                )?;
                let mode = match r.shuffle_upstream_tasks {
                    0 => ExchangeMode::Forward,
                    n => ExchangeMode::Shuffle {
                        upstream_tasks: to_usize(n)?,
                    },
                };
                let merge_by =
                    parse_physical_sort_exprs(&r.merge_by, &decode_ctx, &schema, proto_converter)?;
                Ok(Arc::new(
                    ExchangeReaderExec::new(
                        to_usize(r.stage_id)?,
                        mode,
                        Arc::new(properties),
                        None,
                    )
                    .with_merge_by(LexOrdering::new(merge_by)),
                ))
            }
            Some(fletch_node::Kind::Scan(scan)) => {
                let schema: Schema = scan
                    .schema
                    .as_ref()
                    .ok_or_else(|| plan_datafusion_err!("fragment scan without a schema"))?
                    .try_into()
                    .map_err(|e| plan_datafusion_err!("fragment scan schema: {e}"))?;
                let columns = schema.fields().len();
                let snapshot = TableSnapshot {
                    layout: decode_layout(scan.layout, columns)?,
                    loads: scan.loads.into_iter().map(|l| l.columns).collect(),
                    table: scan.table,
                    table_uid: scan.table_uid,
                    schema: Arc::new(schema),
                };
                let projection = scan
                    .projection
                    .map(|p| decode_columns(&p, columns))
                    .transpose()?;
                Ok(Arc::new(FragmentScanExec::try_new(
                    Arc::new(snapshot),
                    projection,
                    None,
                )?))
            }
            Some(fletch_node::Kind::FragmentWriter(w)) => {
                let [input] = inputs else {
                    return internal_err!(
                        "FragmentWriterExec needs one input, got {}",
                        inputs.len()
                    );
                };
                let layout = decode_layout(w.layout, input.schema().fields().len())?;
                Ok(Arc::new(FragmentWriterExec::try_new(
                    w.table,
                    w.table_uid,
                    w.load,
                    layout,
                    Arc::clone(input),
                )?))
            }
            Some(fletch_node::Kind::Declared(declared)) => {
                let [input] = inputs else {
                    return internal_err!(
                        "DeclaredPropertiesExec needs one input, got {}",
                        inputs.len()
                    );
                };
                let properties = properties::decode(
                    &declared,
                    &input.schema(),
                    input.properties().partitioning.clone(),
                    &decode_ctx,
                    proto_converter,
                )?;
                Ok(Arc::new(DeclaredPropertiesExec::new(
                    Arc::clone(input),
                    Arc::new(properties),
                )))
            }
            Some(fletch_node::Kind::ScanOptions(options)) => {
                let [scan] = inputs else {
                    return internal_err!("scan options need one scan, got {}", inputs.len());
                };
                file_options::restore(&options, scan)
            }
            None => internal_err!("empty Fletch plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let kind = if let Some(w) = node.downcast_ref::<ShuffleWriterExec>() {
            let output = w
                .output()
                .map(|p| serialize_partitioning(p, self, proto_converter))
                .transpose()?;
            fletch_node::Kind::Writer(WriterNode {
                stage_id: w.stage_id() as u64,
                output,
            })
        } else if let Some(r) = node.downcast_ref::<ExchangeReaderExec>() {
            if !r.children().is_empty() {
                return internal_err!(
                    "exchange reader of stage {} still holds its upstream stage",
                    r.stage_id()
                );
            }
            let props = r.properties();
            let schema = protobuf::Schema::try_from(r.schema().as_ref())
                .map_err(|e| plan_datafusion_err!("exchange reader schema: {e}"))?;
            fletch_node::Kind::Reader(ReaderNode {
                stage_id: r.stage_id() as u64,
                shuffle_upstream_tasks: match r.mode() {
                    ExchangeMode::Forward => 0,
                    ExchangeMode::Shuffle { upstream_tasks } => upstream_tasks as u64,
                },
                schema: Some(schema),
                partitioning: Some(serialize_partitioning(
                    &props.partitioning,
                    self,
                    proto_converter,
                )?),
                properties: Some(properties::encode(props, self, proto_converter)?),
                merge_by: r
                    .merge_by()
                    .map(|o| {
                        serialize_physical_sort_exprs(o.iter().cloned(), self, proto_converter)
                    })
                    .transpose()?
                    .unwrap_or_default(),
            })
        } else if let Some(declared) = node.downcast_ref::<DeclaredPropertiesExec>() {
            fletch_node::Kind::Declared(properties::encode(
                declared.properties(),
                self,
                proto_converter,
            )?)
        } else if let Some(scan) = node.downcast_ref::<FragmentScanExec>() {
            let snapshot = scan.snapshot();
            let schema = protobuf::Schema::try_from(snapshot.schema.as_ref())
                .map_err(|e| plan_datafusion_err!("fragment scan schema: {e}"))?;
            fletch_node::Kind::Scan(ScanNode {
                table: snapshot.table.clone(),
                table_uid: snapshot.table_uid.clone(),
                schema: Some(schema),
                layout: Some(encode_layout(&snapshot.layout)),
                loads: snapshot
                    .loads
                    .iter()
                    .map(|l| ColumnList { columns: l.clone() })
                    .collect(),
                projection: scan.projection().map(|p| ColumnList {
                    columns: p.iter().map(|&c| c as u64).collect(),
                }),
            })
        } else if let Some(w) = node.downcast_ref::<FragmentWriterExec>() {
            fletch_node::Kind::FragmentWriter(FragmentWriterNode {
                table: w.table().to_string(),
                table_uid: w.table_uid().to_string(),
                load: w.load(),
                layout: Some(encode_layout(w.layout())),
            })
        } else {
            return internal_err!("Fletch codec cannot encode {}", node.name());
        };
        FletchNode { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| plan_datafusion_err!("encoding Fletch plan node: {e}"))
    }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| plan_datafusion_err!("{v} does not fit in usize"))
}
