//! File scan options datafusion-proto 55 drops (apache/datafusion#24180, fixed after
//! 55): a scan's compression and a CSV scan's line terminator. Without them an executor
//! reads a gzipped file as plain text, failing on JSON and reading garbage rows from
//! CSV. Such a scan travels as a Fletch node holding the options around datafusion-proto's
//! own encoding of the scan, and decodes as the scan with the options put back.
//!
//! JSON's `newline_delimited = false` is also dropped, and `JsonSource` 55 has no getter
//! to carry it by: an executor reads a JSON-array file as newline-delimited JSON and
//! fails with a parse error (a known gap until DataFusion 56).

use std::sync::Arc;

use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::{Result, internal_err, plan_datafusion_err};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{CsvSource, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use prost::Message;

/// The options datafusion-proto would lose from a file scan.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ScanOptionsNode {
    /// A `CompressionTypeVariant` by name; empty when uncompressed.
    #[prost(string, tag = "1")]
    compression: String,
    /// A CSV scan's line terminator byte, when it has one.
    #[prost(uint32, optional, tag = "2")]
    csv_terminator: Option<u32>,
}

/// The options of `plan` that need carrying, if it is a file scan that has any.
pub(super) fn lost_in_proto(plan: &Arc<dyn ExecutionPlan>) -> Option<ScanOptionsNode> {
    let scan = plan.downcast_ref::<DataSourceExec>()?;
    let config = scan.data_source().downcast_ref::<FileScanConfig>()?;
    let compression = if config.file_compression_type.is_compressed() {
        config.file_compression_type.get_variant().to_string()
    } else {
        String::new()
    };
    let csv_terminator = config
        .file_source()
        .downcast_ref::<CsvSource>()
        .and_then(CsvSource::terminator)
        .map(u32::from);
    (!compression.is_empty() || csv_terminator.is_some()).then_some(ScanOptionsNode {
        compression,
        csv_terminator,
    })
}

/// `decoded` (datafusion-proto's rebuilding of a file scan) with `options` put back.
pub(super) fn restore(
    options: &ScanOptionsNode,
    decoded: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(config) = decoded
        .downcast_ref::<DataSourceExec>()
        .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
    else {
        return internal_err!("scan options around {}, not a file scan", decoded.name());
    };
    let mut builder = FileScanConfigBuilder::from(config.clone());
    if !options.compression.is_empty() {
        let variant: CompressionTypeVariant = options.compression.parse().map_err(|e| {
            plan_datafusion_err!("file scan compression {:?}: {e}", options.compression)
        })?;
        builder = builder.with_file_compression_type(FileCompressionType::from(variant));
    }
    if let Some(terminator) = options.csv_terminator {
        let terminator = u8::try_from(terminator)
            .map_err(|_| plan_datafusion_err!("CSV terminator {terminator} is not a byte"))?;
        let Some(csv) = config.file_source().downcast_ref::<CsvSource>() else {
            return internal_err!(
                "a CSV terminator for a {} scan",
                config.file_source().file_type()
            );
        };
        builder = builder.with_source(Arc::new(csv.with_terminator(Some(terminator))));
    }
    Ok(DataSourceExec::from_data_source(builder.build()))
}
