//! What Flight SQL clients expect that DataFusion does not do by itself: `?`
//! placeholders (the DB-API `qmark` style and JDBC's only one), and results in the
//! plain `Utf8`/`Binary` types that every Arrow reader can read.

use arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::common::{Column, Result, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, cast};
use datafusion::sql::sqlparser::tokenizer::Token;
use fletch_planner::ClientStringType;

use crate::statements::{offset, tokenize};

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ... in order of appearance
/// (`?N` becomes `$N`), as DataFusion plans them. Text inside literals, identifiers
/// and comments is left alone; mixing `?` with `$n` is refused.
pub(super) fn number_placeholders(sql: &str) -> Result<String> {
    let tokens = tokenize(sql)?;
    let mut numbered = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut next = 0;
    let mut dollar = false;
    let mut replaced = false;
    for token in &tokens {
        let Token::Placeholder(name) = &token.token else {
            continue;
        };
        let Some(index) = name.strip_prefix('?') else {
            dollar = true;
            continue;
        };
        let replacement = if index.is_empty() {
            next += 1;
            format!("${next}")
        } else {
            format!("${index}")
        };
        let start = offset(sql, token.span.start);
        numbered.push_str(&sql[copied..start]);
        numbered.push_str(&replacement);
        copied = offset(sql, token.span.end);
        replaced = true;
    }
    if !replaced {
        return Ok(sql.to_string());
    }
    if dollar {
        return plan_err!("a statement uses either ? or $n placeholders, not both");
    }
    numbered.push_str(&sql[copied..]);
    Ok(numbered)
}

/// `dataframe`, with string and binary view columns cast to `Utf8`/`Binary` when the
/// session asks for plain types.
pub(super) fn with_client_types(
    dataframe: DataFrame,
    types: ClientStringType,
) -> Result<DataFrame> {
    if types == ClientStringType::View {
        return Ok(dataframe);
    }
    let schema = dataframe.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| plain_type(f.data_type()) != *f.data_type())
    {
        return Ok(dataframe);
    }
    let columns: Vec<Expr> = schema
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            let plain = plain_type(field.data_type());
            if plain == *field.data_type() {
                column
            } else {
                cast(column, plain).alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    dataframe.select(columns)
}

/// `schema` as [`with_client_types`] makes it.
pub(super) fn client_schema(schema: &Schema, types: ClientStringType) -> Schema {
    match types {
        ClientStringType::View => schema.clone(),
        ClientStringType::Utf8 => {
            Schema::new_with_metadata(plain_fields(schema.fields()), schema.metadata().clone())
        }
    }
}

fn plain_fields(fields: &Fields) -> Fields {
    fields.iter().map(|f| plain_field(f)).collect()
}

fn plain_field(field: &Field) -> Field {
    field.clone().with_data_type(plain_type(field.data_type()))
}

/// `data_type` with every view type inside it replaced by its plain counterpart.
fn plain_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(item) => DataType::List(plain_field(item).into()),
        DataType::LargeList(item) => DataType::LargeList(plain_field(item).into()),
        DataType::FixedSizeList(item, size) => {
            DataType::FixedSizeList(plain_field(item).into(), *size)
        }
        DataType::Struct(fields) => DataType::Struct(plain_fields(fields)),
        DataType::Map(entries, sorted) => DataType::Map(plain_field(entries).into(), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_in_order_outside_literals_and_comments() {
        let sql = "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = ? AND y IN (?, ?) /* ? */";
        let numbered = number_placeholders(sql).expect("numbered");
        assert_eq!(
            numbered,
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = $1 AND y IN ($2, $3) /* ? */"
        );
        assert_eq!(
            number_placeholders("SELECT ?2, ?1").ok().as_deref(),
            Some("SELECT $2, $1")
        );
        assert_eq!(
            number_placeholders("SELECT $1").ok().as_deref(),
            Some("SELECT $1")
        );
        assert!(number_placeholders("SELECT ?, $1").is_err());
    }

    #[test]
    fn views_become_plain_types_at_any_depth() {
        let nested = DataType::List(Field::new("item", DataType::Utf8View, true).into());
        assert_eq!(
            plain_type(&nested),
            DataType::List(Field::new("item", DataType::Utf8, true).into())
        );
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, false),
            Field::new("n", DataType::Int64, true),
        ]);
        let plain = client_schema(&schema, ClientStringType::Utf8);
        let types: Vec<&DataType> = plain.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [&DataType::Utf8, &DataType::Binary, &DataType::Int64]
        );
        assert_eq!(client_schema(&schema, ClientStringType::View), schema);
    }
}
