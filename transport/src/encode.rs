//! Record batches as Flight data, for every stream Fletch sends: exchange partitions,
//! table pieces, and query results to Flight SQL clients.
//!
//! arrow-flight 59's `FlightDataEncoder` announces a `LargeList` column as `List` in its
//! schema message while the batches it sends carry 64-bit offsets, so a reader decodes
//! them with the wrong offset width (with dictionaries hydrated it casts the values to
//! `List` instead, changing their type). Fletch uses the encoder for splitting and
//! dictionary messages and replaces its schema message with one that states the
//! batches' own schema.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor, SchemaAsIpc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};

/// How dictionary-encoded columns travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dictionaries {
    /// As dictionaries, each batch with its whole dictionary: Fletch's own readers.
    Resend,
    /// As their values: clients that may not handle dictionaries.
    Hydrate,
}

/// Encodes `batches` as Flight data. The schema message states `schema` (with
/// dictionaries replaced by their values when hydrating), or the first batch's schema
/// when none is given.
pub fn encode_batches(
    schema: Option<SchemaRef>,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
    dictionaries: Dictionaries,
    descriptor: Option<FlightDescriptor>,
) -> BoxStream<'static, Result<FlightData, FlightError>> {
    let hydrate = dictionaries == Dictionaries::Hydrate;
    let announced: Arc<OnceLock<SchemaRef>> = Arc::new(OnceLock::new());
    let announce = |schema: &SchemaRef| {
        if hydrate {
            Arc::new(without_dictionaries(schema))
        } else {
            Arc::clone(schema)
        }
    };
    if let Some(schema) = &schema {
        let _ = announced.set(announce(schema));
    }
    let first_schema = Arc::clone(&announced);
    let batches = batches.and_then(move |batch| {
        let batch = if hydrate {
            hydrate_batch(batch)
        } else {
            Ok(batch)
        };
        if let Ok(batch) = &batch {
            first_schema.get_or_init(|| batch.schema());
        }
        futures::future::ready(batch)
    });
    let mut builder =
        FlightDataEncoderBuilder::new().with_dictionary_handling(DictionaryHandling::Resend);
    if let Some(schema) = schema {
        builder = builder.with_schema(announce(&schema));
    }
    if let Some(descriptor) = descriptor {
        builder = builder.with_flight_descriptor(Some(descriptor));
    }
    let options = IpcWriteOptions::default();
    let mut first = true;
    builder
        .build(batches)
        .map_ok(move |mut data| {
            // The encoder's first message is always its schema message.
            if std::mem::take(&mut first)
                && let Some(schema) = announced.get()
            {
                data.data_header = FlightData::from(SchemaAsIpc::new(schema, &options)).data_header;
            }
            data
        })
        .boxed()
}

fn hydrate_batch(batch: RecordBatch) -> Result<RecordBatch, FlightError> {
    let schema = batch.schema();
    let target = without_dictionaries(&schema);
    if target == *schema {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(target),
        columns,
        &options,
    )?)
}

fn without_dictionaries(schema: &Schema) -> Schema {
    let fields: Fields = schema
        .fields()
        .iter()
        .map(field_without_dictionaries)
        .collect();
    Schema::new(fields).with_metadata(schema.metadata().clone())
}

fn field_without_dictionaries(field: &FieldRef) -> FieldRef {
    let data_type = type_without_dictionaries(field.data_type());
    if &data_type == field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(field.as_ref().clone().with_data_type(data_type))
    }
}

fn type_without_dictionaries(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, values) => type_without_dictionaries(values),
        DataType::List(item) => DataType::List(field_without_dictionaries(item)),
        DataType::LargeList(item) => DataType::LargeList(field_without_dictionaries(item)),
        DataType::ListView(item) => DataType::ListView(field_without_dictionaries(item)),
        DataType::LargeListView(item) => DataType::LargeListView(field_without_dictionaries(item)),
        DataType::FixedSizeList(item, size) => {
            DataType::FixedSizeList(field_without_dictionaries(item), *size)
        }
        DataType::Map(entries, sorted) => {
            DataType::Map(field_without_dictionaries(entries), *sorted)
        }
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(field_without_dictionaries).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Float64Builder, LargeListBuilder, StringDictionaryBuilder};
    use arrow::datatypes::{Field, Int32Type};

    use super::*;
    use crate::decode::decode_validated;

    fn large_list() -> ArrayRef {
        let mut builder = LargeListBuilder::new(Float64Builder::new());
        builder.values().append_slice(&[1.1, 2.2]);
        builder.append(true);
        builder.append(false);
        builder.values().append_null();
        builder.values().append_slice(&[5.5, 6.6]);
        builder.append(true);
        Arc::new(builder.finish())
    }

    fn dictionary() -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        builder.append_value("a");
        builder.append_null();
        builder.append_value("b");
        Arc::new(builder.finish())
    }

    async fn round_trip(
        schema: Option<SchemaRef>,
        batch: RecordBatch,
        dictionaries: Dictionaries,
    ) -> RecordBatch {
        let data = encode_batches(
            schema,
            futures::stream::iter([Ok(batch)]),
            dictionaries,
            None,
        );
        let decoded: Vec<RecordBatch> = decode_validated(data)
            .try_collect()
            .await
            .expect("decodes and validates");
        assert_eq!(decoded.len(), 1);
        decoded.into_iter().next().expect("one batch")
    }

    fn batch(columns: Vec<ArrayRef>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
    }

    #[tokio::test]
    async fn large_lists_keep_their_type_and_values() {
        let list = large_list();
        for column in [list.clone(), list.slice(1, 2), list.slice(2, 1)] {
            let sent = batch(vec![column]);
            for schema in [None, Some(sent.schema())] {
                for dictionaries in [Dictionaries::Resend, Dictionaries::Hydrate] {
                    let got = round_trip(schema.clone(), sent.clone(), dictionaries).await;
                    assert_eq!(
                        got,
                        sent,
                        "{dictionaries:?}, schema given: {}",
                        schema.is_some()
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn sliced_fixed_size_lists_keep_their_rows() {
        let values = arrow::array::Int64Array::from_iter_values(0..15);
        let item = Arc::new(Field::new_list_field(DataType::Int64, true));
        let list: ArrayRef = Arc::new(
            arrow::array::FixedSizeListArray::try_new(item, 5, Arc::new(values), None)
                .expect("list"),
        );
        for column in [list.clone(), list.slice(1, 2), list.slice(2, 1)] {
            let sent = batch(vec![column]);
            let got = round_trip(None, sent.clone(), Dictionaries::Resend).await;
            assert_eq!(got, sent);
        }
    }

    #[tokio::test]
    async fn dictionaries_travel_as_dictionaries_or_as_values() {
        let sent = batch(vec![dictionary(), large_list()]);
        let resent = round_trip(None, sent.clone(), Dictionaries::Resend).await;
        assert_eq!(resent, sent);
        let hydrated = round_trip(Some(sent.schema()), sent.clone(), Dictionaries::Hydrate).await;
        assert_eq!(hydrated.column(0).data_type(), &DataType::Utf8);
        assert_eq!(hydrated.column(1), sent.column(1));
        let values = cast(sent.column(0), &DataType::Utf8).expect("cast");
        assert_eq!(hydrated.column(0).to_data(), values.to_data());
        assert_eq!(hydrated.column(0).null_count(), 1);
    }
}
