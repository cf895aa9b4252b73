//! Prepared statements: planned at creation for their result and parameter schemas,
//! kept per session, bound to one row of parameters by `DoPut`, and planned again with
//! those values each time they run (so they see the tables as they are then).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ActionCreatePreparedStatementResult, DoPutPreparedStatementResult};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use tonic::Status;

use super::handles::{Prepared, Session, handle_text};
use super::replies::{encode_schema, to_status};
use super::statements::string_types;
use super::{CoordinatorService, client_habits};

impl CoordinatorService {
    /// Prepares `query` in `session`, once its user may run it: planned now for its
    /// schemas if DataFusion can, else (Fletch's own statements) when executed.
    pub(super) async fn create_prepared(
        &self,
        session: &Session,
        query: &str,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(session, query)?;
        let sql = client_habits::number_placeholders(query).map_err(to_status)?;
        // Queries and DataFusion's own statements are planned now, for their schemas;
        // Fletch's (CREATE TABLE ... PARTITION BY, CACHE TABLE) when executed.
        let (dataset_schema, parameter_schema) =
            match session.ctx.state().create_logical_plan(&sql).await {
                Ok(plan) => (
                    client_habits::client_schema(
                        plan.schema().as_arrow(),
                        string_types(&session.ctx),
                    ),
                    parameter_schema(&plan)?,
                ),
                Err(e) if crate::statements::is_fletch_statement(&session.ctx, &sql) => {
                    tracing::debug!("prepared as a Fletch statement: {e}");
                    (Schema::empty(), Schema::empty())
                }
                Err(e) => return Err(to_status(e)),
            };
        let prepared = Prepared {
            sql,
            parameters: None,
        };
        let handle = session.prepared.insert(prepared);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: encode_schema(&dataset_schema)?,
            parameter_schema: encode_schema(&parameter_schema)?,
        })
    }

    /// Binds the one parameter row `parameters` sends to the prepared statement
    /// `statement_handle` names.
    pub(super) async fn bind_parameters(
        &self,
        session: &Session,
        statement_handle: &[u8],
        parameters: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (handle, mut prepared) = self.prepared(session, statement_handle)?;
        let batch = the_parameter_row(parameters, self.max_parameter_bytes).await?;
        prepared.parameters = batch.as_ref().map(parameters_from).transpose()?;
        session.prepared.insert_at(handle.clone(), prepared);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    /// The prepared statement `handle` names in `session`: another session's (or one
    /// from a session that expired) is not found.
    pub(super) fn prepared(
        &self,
        session: &Session,
        handle: &[u8],
    ) -> Result<(String, Prepared), Status> {
        let handle = handle_text(handle, "prepared statement")?;
        match session.prepared.get(&handle) {
            Some(prepared) => Ok((handle, prepared)),
            None => Err(Status::not_found(format!(
                "no prepared statement {handle:?} in this session"
            ))),
        }
    }

    /// The prepared statement `handle` names, with its parameters bound.
    pub(super) async fn prepared_dataframe(
        &self,
        session: &Session,
        handle: &[u8],
    ) -> Result<DataFrame, Status> {
        let (_, prepared) = self.prepared(session, handle)?;
        let dataframe = self.plan(session, &prepared.sql).await?;
        match prepared.parameters {
            Some(parameters) => dataframe.with_param_values(parameters).map_err(to_status),
            None => Ok(dataframe),
        }
    }
}

/// Positional parameters from the first row of a bound parameter batch.
fn parameters_from(batch: &RecordBatch) -> Result<ParamValues, Status> {
    if batch.num_rows() == 0 {
        return Err(Status::invalid_argument("the parameter batch has no row"));
    }
    let values = batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("reading parameters: {e}")))?;
    Ok(ParamValues::from(values))
}

/// The parameter schema of a planned statement: `$1`, `$2`, ... with their types
/// where DataFusion infers them.
fn parameter_schema(plan: &datafusion::logical_expr::LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(to_status)?;
    let mut names: Vec<(usize, String)> = types
        .keys()
        .map(|name| {
            let index = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (index, name.clone())
        })
        .collect();
    names.sort();
    let fields: Vec<Field> = names
        .into_iter()
        .map(|(_, name)| {
            let data_type = types
                .get(&name)
                .cloned()
                .flatten()
                .unwrap_or(DataType::Null);
            Field::new(name, data_type, true)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The one parameter row a `DoPut` sends, as a one-row batch (`None` for none). The
/// stream is read only up to `max_bytes` of Flight data, so a client cannot make the
/// coordinator read more than that, and it holds one batch at a time; more than one
/// row is refused, not ignored.
async fn the_parameter_row(
    stream: PeekableFlightDataStream,
    max_bytes: usize,
) -> Result<Option<RecordBatch>, Status> {
    let mut seen = 0usize;
    let capped = stream.map(move |data| {
        let data = data?;
        seen = seen.saturating_add(data.data_body.len() + data.data_header.len());
        if seen > max_bytes {
            return Err(Status::invalid_argument(format!(
                "the parameters exceed {max_bytes} bytes, this endpoint's limit"
            )));
        }
        Ok(data)
    });
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        capped.map_err(FlightError::from),
    );
    let (mut row, mut rows) = (None, 0usize);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::invalid_argument(format!("reading parameters: {other}")),
        })?;
        if row.is_none() && batch.num_rows() > 0 {
            row = Some(batch.slice(0, 1));
        }
        rows = rows.saturating_add(batch.num_rows());
    }
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "a statement binds one row of parameters; {rows} rows were sent"
        )));
    }
    Ok(row)
}
