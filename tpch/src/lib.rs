//! TPC-H for Fletch's tests, benchmarks and the shell's `--tpch`: the data, generated
//! in-process with tpchgen-arrow into parquet files (once per directory; later runs
//! reuse them) and registered as tables, the 22 query texts, and the text form two
//! engines' answers are compared in. Nothing here is part of the engine: it runs on
//! any DataFusion `SessionContext`, Fletch's or single-node.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// The 22 TPC-H queries as Apache DataFusion's benchmarks run them (Apache-2.0); q15
/// holds three statements (CREATE VIEW, SELECT, DROP VIEW) whose answer is the SELECT's.
pub const QUERIES: [&str; 22] = [
    include_str!("../queries/q1.sql"),
    include_str!("../queries/q2.sql"),
    include_str!("../queries/q3.sql"),
    include_str!("../queries/q4.sql"),
    include_str!("../queries/q5.sql"),
    include_str!("../queries/q6.sql"),
    include_str!("../queries/q7.sql"),
    include_str!("../queries/q8.sql"),
    include_str!("../queries/q9.sql"),
    include_str!("../queries/q10.sql"),
    include_str!("../queries/q11.sql"),
    include_str!("../queries/q12.sql"),
    include_str!("../queries/q13.sql"),
    include_str!("../queries/q14.sql"),
    include_str!("../queries/q15.sql"),
    include_str!("../queries/q16.sql"),
    include_str!("../queries/q17.sql"),
    include_str!("../queries/q18.sql"),
    include_str!("../queries/q19.sql"),
    include_str!("../queries/q20.sql"),
    include_str!("../queries/q21.sql"),
    include_str!("../queries/q22.sql"),
];

/// Query `n` (1-based) split into its statements.
pub fn query_statements(n: usize) -> Option<Vec<&'static str>> {
    let text = QUERIES.get(n.checked_sub(1)?)?;
    Some(
        text.split(';')
            .map(str::trim)
            .filter(|s| {
                s.lines()
                    .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
            })
            .collect(),
    )
}

/// Runs query `n`'s statements on `ctx`; returns the elapsed time and the rows of the
/// statement that produced the answer.
pub async fn run_query(
    ctx: &SessionContext,
    n: usize,
) -> Result<(std::time::Duration, Vec<RecordBatch>)> {
    let statements = query_statements(n)
        .ok_or_else(|| DataFusionError::Plan(format!("TPC-H has queries 1 to 22, not {n}")))?;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for statement in statements {
        let batches = ctx.sql(statement).await?.collect().await?;
        if batches.iter().any(|b| b.num_columns() > 0) {
            answer = batches;
        }
    }
    Ok((started.elapsed(), answer))
}

/// Each row of `batches` as one line of text, cells separated by `|`, NULL as `NULL`.
pub fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    Ok(rows)
}

/// [`rows_as_text`], sorted: two engines agree on an answer when these are equal
/// (TPC-H's ORDER BYs leave ties, so order is not compared).
pub fn canonical_rows(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let mut rows = rows_as_text(batches)?;
    rows.sort();
    Ok(rows)
}

/// The eight TPC-H tables.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// The directory `fletch --tpch SF` uses under `cache_root`.
pub fn data_dir(cache_root: &Path, scale_factor: f64) -> PathBuf {
    cache_root.join(format!("tpch-sf{scale_factor}"))
}

/// Writes every table of scale factor `scale_factor` as `dir/<table>.parquet`, skipping
/// tables already there. A table is written to a temporary name and renamed, so an
/// interrupted run never leaves a half-written file behind.
pub fn generate(dir: &Path, scale_factor: f64) -> Result<()> {
    if !(scale_factor > 0.0 && scale_factor.is_finite()) {
        return Err(DataFusionError::Plan(format!(
            "TPC-H scale factor must be a positive number, got {scale_factor}"
        )));
    }
    std::fs::create_dir_all(dir)?;
    for table in TABLES {
        let path = dir.join(format!("{table}.parquet"));
        if path.exists() {
            continue;
        }
        let sf = scale_factor;
        let reader: Box<dyn RecordBatchReader + Send> = match table {
            "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1))),
            "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1))),
            "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, 1, 1))),
            "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, 1, 1))),
            "part" => Box::new(PartArrow::new(PartGenerator::new(sf, 1, 1))),
            "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1))),
            "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, 1, 1))),
            _ => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1))),
        };
        write_parquet(&path, reader)?;
    }
    Ok(())
}

fn write_parquet(path: &Path, reader: Box<dyn RecordBatchReader + Send>) -> Result<()> {
    // Unique per process, so two processes generating at once never share a file.
    let partial = path.with_extension(format!("parquet.{}.partial", std::process::id()));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(File::create(&partial)?, reader.schema(), Some(props))?;
    for batch in reader {
        writer.write(&batch?)?;
    }
    writer.close()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Registers the eight tables of `dir` (as written by [`generate`]) in `ctx`.
pub async fn register(ctx: &SessionContext, dir: &Path) -> Result<()> {
    for table in TABLES {
        let path = dir.join(format!("{table}.parquet"));
        let path = path.to_str().ok_or_else(|| {
            DataFusionError::Plan(format!("TPC-H path is not UTF-8: {}", path.display()))
        })?;
        ctx.register_parquet(table, path, ParquetReadOptions::default())
            .await?;
    }
    Ok(())
}

/// Each table's key: caching hash-fragments every table on it, so orders and lineitem
/// (both on the order key) join where their fragments are.
pub const TABLE_KEYS: [(&str, &str); 8] = [
    ("nation", "n_nationkey"),
    ("region", "r_regionkey"),
    ("part", "p_partkey"),
    ("supplier", "s_suppkey"),
    ("partsupp", "ps_partkey"),
    ("customer", "c_custkey"),
    ("orders", "o_orderkey"),
    ("lineitem", "l_orderkey"),
];

/// The statements that load the eight registered tables into a Fletch cluster's
/// memory (`CACHE TABLE`, run with `fletch::sql`), each hash-fragmented on its key
/// with the default fragment and replica counts.
pub fn cache_statements() -> impl Iterator<Item = String> {
    TABLE_KEYS
        .iter()
        .map(|(table, key)| format!("CACHE TABLE {table} PARTITION BY HASH ({key})"))
}
