//! Flight data from the network into record batches: dictionary deltas refused before
//! the decoder sees them, and every batch validated in full before anyone reads it.

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::{FlightDataDecoder, FlightRecordBatchStream};
use arrow_flight::error::FlightError;
use futures::{Stream, TryStreamExt};

use crate::validate::validate_batch;

/// Decodes Flight data into batches, each fully validated before anyone reads it.
pub fn decode_validated(
    flight_data: impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> {
    let flight_data = flight_data.and_then(|data| async move {
        refuse_dictionary_delta(&data)?;
        Ok(data)
    });
    // SAFETY: the decoder's own validation is skipped because `validate_batch` runs
    // the same checks (faster for string views) on every batch before it leaves
    // this function; nothing reads a batch's values in between. The one place the
    // decoder itself reads values, concatenating a dictionary delta onto the
    // dictionary it holds, never runs: deltas are refused before it sees them.
    let decoder = unsafe { FlightDataDecoder::new(flight_data).with_skip_validation() };
    FlightRecordBatchStream::new(decoder).and_then(|batch| async move {
        validate_batch(&batch)?;
        Ok(batch)
    })
}

/// Refuses a dictionary delta: Fletch never sends one (its encoders resend whole
/// dictionaries), and the decoder would concatenate it before any validation.
fn refuse_dictionary_delta(data: &FlightData) -> Result<(), FlightError> {
    if data.data_header.is_empty() {
        return Ok(());
    }
    let message = arrow::ipc::root_as_message(&data.data_header)
        .map_err(|e| FlightError::DecodeError(format!("malformed IPC message header: {e}")))?;
    if message
        .header_as_dictionary_batch()
        .is_some_and(|dictionary| dictionary.isDelta())
    {
        return Err(FlightError::DecodeError(
            "dictionary deltas are not accepted: send whole dictionaries".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringDictionaryBuilder};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use arrow::ipc::writer::{
        DictionaryHandling, DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
    };

    use super::*;

    /// Two batches of one dictionary column as Flight data, the second's dictionary
    /// sent with `handling` (a delta, or a whole replacement).
    fn dictionary_stream(handling: DictionaryHandling) -> Vec<FlightData> {
        let field = Field::new(
            "s",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        );
        let schema = Arc::new(Schema::new(vec![field]));
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        builder.append_value("a");
        builder.append_value("b");
        let first = builder.finish_preserve_values();
        builder.append_value("a");
        builder.append_value("d");
        let second = builder.finish_preserve_values();
        let options = IpcWriteOptions::default().with_dictionary_handling(handling);
        let generator = IpcDataGenerator::default();
        let mut tracker = DictionaryTracker::new(false);
        let mut context = IpcWriteContext::default();
        let encoded_schema =
            generator.schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options);
        let mut data: Vec<FlightData> = vec![encoded_schema.into()];
        for column in [first, second] {
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column) as ArrayRef])
                    .expect("batch");
            let (dictionaries, batch) = generator
                .encode(&batch, &mut tracker, &options, &mut context)
                .expect("encode");
            data.extend(dictionaries.into_iter().map(FlightData::from));
            data.push(batch.into());
        }
        data
    }

    async fn decode(data: Vec<FlightData>) -> Result<Vec<RecordBatch>, FlightError> {
        decode_validated(futures::stream::iter(data.into_iter().map(Ok)))
            .try_collect()
            .await
    }

    #[tokio::test]
    async fn dictionary_deltas_are_refused_before_the_decoder_sees_them() {
        let err = decode(dictionary_stream(DictionaryHandling::Delta))
            .await
            .expect_err("a delta")
            .to_string();
        assert!(err.contains("dictionary deltas are not accepted"), "{err}");
        let whole = decode(dictionary_stream(DictionaryHandling::Resend))
            .await
            .expect("whole dictionaries");
        assert_eq!(whole.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    }
}
