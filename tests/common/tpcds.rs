//! TPC-DS fixture: the 24 tables generated in-process with tpcdsgen-arrow into parquet
//! files (once per directory; later runs reuse them), and the 99 query texts.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatchReader;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tokio::sync::OnceCell;
use tpcdsgen::config::{Session, SessionBuilder};
use tpcdsgen_arrow::{
    CallCenterArrow, CatalogPageArrow, CatalogReturnsArrow, CatalogSalesArrow,
    CustomerAddressArrow, CustomerArrow, CustomerDemographicsArrow, DateDimArrow,
    HouseholdDemographicsArrow, IncomeBandArrow, InventoryArrow, ItemArrow, PromotionArrow,
    ReasonArrow, ShipModeArrow, StoreArrow, StoreReturnsArrow, StoreSalesArrow, TimeDimArrow,
    WarehouseArrow, WebPageArrow, WebReturnsArrow, WebSalesArrow, WebSiteArrow,
};

/// The scale factor the differential test runs at: small enough that all 99 queries
/// run in every CI run (the dimension tables that do not scale, such as
/// customer_demographics and date_dim, dominate at this size).
pub const SCALE_FACTOR: f64 = 0.01;

pub const TABLES: [&str; 24] = [
    "call_center",
    "catalog_page",
    "catalog_returns",
    "catalog_sales",
    "customer",
    "customer_address",
    "customer_demographics",
    "date_dim",
    "household_demographics",
    "income_band",
    "inventory",
    "item",
    "promotion",
    "reason",
    "ship_mode",
    "store",
    "store_returns",
    "store_sales",
    "time_dim",
    "warehouse",
    "web_page",
    "web_returns",
    "web_sales",
    "web_site",
];

fn generator(table: &str, session: Session) -> Box<dyn RecordBatchReader + Send> {
    match table {
        "call_center" => Box::new(CallCenterArrow::new(session)),
        "catalog_page" => Box::new(CatalogPageArrow::new(session)),
        "catalog_returns" => Box::new(CatalogReturnsArrow::new(session)),
        "catalog_sales" => Box::new(CatalogSalesArrow::new(session)),
        "customer" => Box::new(CustomerArrow::new(session)),
        "customer_address" => Box::new(CustomerAddressArrow::new(session)),
        "customer_demographics" => Box::new(CustomerDemographicsArrow::new(session)),
        "date_dim" => Box::new(DateDimArrow::new(session)),
        "household_demographics" => Box::new(HouseholdDemographicsArrow::new(session)),
        "income_band" => Box::new(IncomeBandArrow::new(session)),
        "inventory" => Box::new(InventoryArrow::new(session)),
        "item" => Box::new(ItemArrow::new(session)),
        "promotion" => Box::new(PromotionArrow::new(session)),
        "reason" => Box::new(ReasonArrow::new(session)),
        "ship_mode" => Box::new(ShipModeArrow::new(session)),
        "store" => Box::new(StoreArrow::new(session)),
        "store_returns" => Box::new(StoreReturnsArrow::new(session)),
        "store_sales" => Box::new(StoreSalesArrow::new(session)),
        "time_dim" => Box::new(TimeDimArrow::new(session)),
        "warehouse" => Box::new(WarehouseArrow::new(session)),
        "web_page" => Box::new(WebPageArrow::new(session)),
        "web_returns" => Box::new(WebReturnsArrow::new(session)),
        "web_sales" => Box::new(WebSalesArrow::new(session)),
        "web_site" => Box::new(WebSiteArrow::new(session)),
        other => unreachable!("{other} is not in TABLES"),
    }
}

/// Writes every table as `dir/<table>.parquet`, skipping tables already there; each is
/// written under a temporary name and renamed, so an interrupted run leaves no half file.
pub fn generate(dir: &Path, scale_factor: f64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for table in TABLES {
        let path = dir.join(format!("{table}.parquet"));
        if path.exists() {
            continue;
        }
        let session = SessionBuilder::new()
            .with_scale_factor(scale_factor)
            .build()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let reader = generator(table, session);
        let partial = path.with_extension(format!("parquet.{}.partial", std::process::id()));
        let mut writer = ArrowWriter::try_new(File::create(&partial)?, reader.schema(), None)?;
        for batch in reader {
            writer.write(&batch?)?;
        }
        writer.close()?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(())
}

/// The tables at [`SCALE_FACTOR`], generated once per test process.
pub async fn data() -> &'static PathBuf {
    static DIR: OnceCell<PathBuf> = OnceCell::const_new();
    DIR.get_or_init(|| async {
        let dir = super::test_data_dir(&format!("tpcds-sf{SCALE_FACTOR}"));
        let target = dir.clone();
        tokio::task::spawn_blocking(move || generate(&target, SCALE_FACTOR))
            .await
            .expect("generation task")
            .expect("TPC-DS generation");
        dir
    })
    .await
}

/// Registers the 24 tables of `dir` in `ctx`.
pub async fn register(ctx: &SessionContext, dir: &Path) -> Result<()> {
    for table in TABLES {
        let path = dir.join(format!("{table}.parquet"));
        let path = path
            .to_str()
            .ok_or_else(|| DataFusionError::Plan(format!("not UTF-8: {}", path.display())))?;
        ctx.register_parquet(table, path, ParquetReadOptions::default())
            .await?;
    }
    Ok(())
}

/// Query `n`'s statements (q14, q23, q24 and q39 have two, each an answer of its own).
pub fn query_statements(n: usize) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tpcds/queries")
        .join(format!("q{n}.sql"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    fletch::split_statements(&text).unwrap_or_else(|e| panic!("splitting q{n}: {e}"))
}
