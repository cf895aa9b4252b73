//! Comparing an answer with the oracle's: rows as multisets, plus, where the query has an
//! ORDER BY, the sequence of its sort keys. Ties may come in any order; the keys may
//! not. Under a LIMIT, the rows tied with the last one are interchangeable (either
//! engine may keep any of them), so only their keys are compared.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::sql::sqlparser::ast::{Expr, LimitClause, OrderByKind, Statement, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rows as text, with floating-point values to 12 significant digits: a sum or a
/// standard deviation merged from partials in another order differs in the last bits.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let comparable: Vec<RecordBatch> = batches.iter().map(rounded_floats).collect();
    super::rows(&comparable)
}

fn rounded_floats(batch: &RecordBatch) -> RecordBatch {
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !column.data_type().is_floating() {
                return Arc::clone(column);
            }
            let values = cast(column, &DataType::Float64).expect("floats widen to f64");
            let values = values.as_primitive::<Float64Type>();
            let text: StringArray = values
                .iter()
                .map(|v| v.map(|v| format!("{v:.11e}")))
                .collect();
            Arc::new(text) as ArrayRef
        })
        .collect();
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_floating() {
                Field::new(f.name(), DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("same rows")
}

/// What of a query's outermost ORDER BY the comparison can check.
#[derive(Debug, Default, PartialEq)]
pub struct Order {
    /// Output column indices of the longest prefix of ORDER BY items that name an
    /// output column (by name or position); a prefix of an order is still an order.
    pub keys: Vec<usize>,
    pub limited: bool,
}

/// The outermost ORDER BY of `sql`, resolved against the answer's columns.
pub fn order_of(sql: &str, answer: &[RecordBatch]) -> Order {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return Order::default();
    };
    let Some(Statement::Query(query)) = statements.pop() else {
        return Order::default();
    };
    let limited = matches!(
        &query.limit_clause,
        Some(
            LimitClause::LimitOffset { limit: Some(_), .. } | LimitClause::OffsetCommaLimit { .. }
        )
    ) || query.fetch.is_some();
    let Some(schema) = answer.first().map(RecordBatch::schema) else {
        return Order {
            keys: Vec::new(),
            limited,
        };
    };
    let items = match query.order_by.as_ref().map(|o| &o.kind) {
        Some(OrderByKind::Expressions(items)) => items.as_slice(),
        _ => &[],
    };
    let mut keys = Vec::new();
    for item in items {
        let column = match &item.expr {
            Expr::Identifier(ident) => schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(&ident.value)),
            Expr::CompoundIdentifier(parts) => parts.last().and_then(|p| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(&p.value))
            }),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|p| p.checked_sub(1))
                    .filter(|&p| p < schema.fields().len()),
                _ => None,
            },
            _ => None,
        };
        match column {
            Some(c) => keys.push(c),
            None => break,
        }
    }
    Order { keys, limited }
}

/// Each row's values of `keys`, in the answer's order.
fn key_sequence(batches: &[RecordBatch], keys: &[usize]) -> Vec<String> {
    let projected: Vec<RecordBatch> = batches
        .iter()
        .map(|b| b.project(keys).expect("sort keys are output columns"))
        .collect();
    rows(&projected)
}

/// Whether `actual` is an acceptable answer to `sql` given the oracle's `expected`:
/// `Ok(true)` when its order was checked too; the error says how it differs.
pub fn compare(
    sql: &str,
    expected: &[RecordBatch],
    actual: &[RecordBatch],
) -> Result<bool, String> {
    let order = order_of(sql, expected);
    let (mut want, mut got) = (rows(expected), rows(actual));
    if !order.keys.is_empty() {
        let (want_keys, got_keys) = (
            key_sequence(expected, &order.keys),
            key_sequence(actual, &order.keys),
        );
        if want_keys != got_keys {
            let at = want_keys
                .iter()
                .zip(&got_keys)
                .position(|(w, g)| w != g)
                .unwrap_or(want_keys.len().min(got_keys.len()));
            return Err(format!(
                "sort keys differ at row {at} ({} rows expected, {} returned): expected {:?}, returned {:?}",
                want_keys.len(),
                got_keys.len(),
                want_keys.get(at),
                got_keys.get(at)
            ));
        }
        if order.limited
            && let Some(last) = want_keys.last()
        {
            let boundary = |rows: &mut Vec<String>| {
                let mut i = 0;
                rows.retain(|_| {
                    i += 1;
                    want_keys[i - 1] != *last
                });
            };
            boundary(&mut want);
            boundary(&mut got);
        }
    }
    want.sort();
    got.sort();
    if want != got {
        let first_difference = want
            .iter()
            .zip(&got)
            .find(|(w, g)| w != g)
            .map(|(w, g)| format!("expected {w:?}, returned {g:?}"))
            .unwrap_or_else(|| "one answer is a prefix of the other".to_string());
        return Err(format!(
            "{} rows expected, {} returned; first difference (sorted): {first_difference}",
            want.len(),
            got.len()
        ));
    }
    Ok(!order.keys.is_empty())
}
