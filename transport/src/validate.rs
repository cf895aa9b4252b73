//! Validation of record batches decoded from the wire: as thorough as arrow's
//! `ArrayData::validate_full`, but with `Utf8View` text checked buffer by buffer instead
//! of string by string. Arrow validates each view with its own `from_utf8` call, which on
//! lineitem-shaped data took 60% of an exchange reader's CPU, and more than halved the
//! throughput of an exchange between two processes.

use arrow::array::{ArrayData, MAX_INLINE_VIEW_LEN, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow_data::{ByteView, validate_string_view};

/// Checks every column of `batch` the way `ArrayData::validate_full` would.
pub(crate) fn validate_batch(batch: &RecordBatch) -> Result<(), ArrowError> {
    batch
        .columns()
        .iter()
        .try_for_each(|column| validate_array(&column.to_data()))
}

fn validate_array(data: &ArrayData) -> Result<(), ArrowError> {
    if data.data_type() != &DataType::Utf8View {
        data.validate()?;
        data.validate_nulls()?;
        data.validate_values()?;
        return data.child_data().iter().try_for_each(validate_array);
    }
    data.validate()?;
    data.validate_nulls()?;
    let views = &data.buffers()[0].typed_data::<u128>()[data.offset()..][..data.len()];
    let buffers = &data.buffers()[1..];
    if buffers_are_utf8(buffers) && views_are_valid(views, buffers) {
        return Ok(());
    }
    // Something is off, or a buffer holds non-UTF-8 bytes outside any string (allowed):
    // arrow decides string by string, and names the first bad one.
    validate_string_view(views, buffers)
}

fn buffers_are_utf8(buffers: &[Buffer]) -> bool {
    buffers
        .iter()
        .all(|b| std::str::from_utf8(b.as_slice()).is_ok())
}

/// The high bit of each of the 12 inline bytes of a view (bytes 4..16).
const INLINE_HIGH_BITS: u128 = 0x8080_8080_8080_8080_8080_8080_0000_0000;

/// Every check of arrow's `validate_string_view` in one pass, given that every buffer is
/// valid UTF-8: inline strings are zero-padded and UTF-8; other views point inside their
/// buffer, repeat its first four bytes as their prefix, and start and end on character
/// boundaries, so the text they cut out of a valid buffer is valid too.
fn views_are_valid(views: &[u128], buffers: &[Buffer]) -> bool {
    views.iter().all(|&view| {
        let len = view as u32;
        if len <= MAX_INLINE_VIEW_LEN {
            if len < MAX_INLINE_VIEW_LEN && (view >> (32 + len * 8)) != 0 {
                return false;
            }
            return view & INLINE_HIGH_BITS == 0
                || std::str::from_utf8(&view.to_le_bytes()[4..4 + len as usize]).is_ok();
        }
        let view = ByteView::from(view);
        let Some(buffer) = buffers.get(view.buffer_index as usize) else {
            return false;
        };
        let bytes = buffer.as_slice();
        let start = view.offset as usize;
        let end = start + len as usize;
        bytes.get(start..end).is_some_and(|text| {
            text[..4] == view.prefix.to_le_bytes()
                && is_char_boundary(bytes, start)
                && is_char_boundary(bytes, end)
        })
    })
}

/// Whether `at` starts a UTF-8 character in `bytes` (or is its end).
fn is_char_boundary(bytes: &[u8], at: usize) -> bool {
    match bytes.get(at) {
        // Continuation bytes are 0b10xx_xxxx.
        Some(&b) => (b as i8) >= -0x40,
        None => at == bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringViewArray, StringViewBuilder};
    use arrow::buffer::ScalarBuffer;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(column: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("s", column.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![column]).expect("valid batch")
    }

    /// Builds a view array without validation, as a decoder that skipped it would.
    fn unchecked_views(views: Vec<u128>, buffers: Vec<Buffer>) -> ArrayRef {
        // SAFETY: test input for the validator; only validated, never read as text.
        Arc::new(unsafe {
            StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, None)
        })
    }

    /// The bytes of an inline view holding `text`, zero-padded; tests then dirty them.
    fn inline_view_bytes(text: &[u8]) -> [u8; 16] {
        let mut view = [0u8; 16];
        view[..4].copy_from_slice(&(text.len() as u32).to_le_bytes());
        view[4..4 + text.len()].copy_from_slice(text);
        view
    }

    fn long_view(len: u32, buffer: u32, offset: u32, data: &[u8]) -> u128 {
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&data[offset as usize..offset as usize + 4]);
        ByteView::new(len, &prefix)
            .with_buffer_index(buffer)
            .with_offset(offset)
            .as_u128()
    }

    #[test]
    fn accepts_what_arrow_accepts() {
        let mut builder = StringViewBuilder::new();
        for s in [
            "",
            "short",
            "exactly twelve",
            "a string longer than twelve bytes",
            "κόσμε ünïcödé long enough",
        ] {
            builder.append_value(s);
        }
        builder.append_null();
        let column: ArrayRef = Arc::new(builder.finish());
        validate_batch(&batch(Arc::clone(&column))).expect("valid");
        validate_batch(&batch(column.slice(1, 3))).expect("valid slice");
    }

    #[test]
    fn rejects_a_string_cut_inside_a_character() {
        let data = "abcdé and more text".as_bytes(); // 'é' is two bytes at 4..6
        let view = long_view(13, 0, 0, data); // ends at 13: fine
        let inside = long_view(13, 0, 5, data); // starts at 5, inside 'é'
        let ok = unchecked_views(vec![view], vec![Buffer::from(data)]);
        validate_batch(&batch(ok)).expect("boundary-aligned view is valid");
        let bad = unchecked_views(vec![inside], vec![Buffer::from(data)]);
        let err = validate_batch(&batch(bad)).expect_err("view starts inside a character");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn rejects_invalid_inline_and_buffer_text() {
        let inline = inline_view_bytes(&[0xC3, 0x28]); // invalid 2-byte sequence
        let bad_inline = unchecked_views(vec![u128::from_le_bytes(inline)], vec![]);
        assert!(validate_batch(&batch(bad_inline)).is_err());

        let data = b"valid prefix \xFF\xFE then garbage";
        let bad_buffer = unchecked_views(
            vec![long_view(20, 0, 0, data)],
            vec![Buffer::from(&data[..])],
        );
        let err = validate_batch(&batch(bad_buffer)).expect_err("invalid UTF-8 in a string");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn rejects_inline_strings_with_bytes_after_their_end() {
        let mut inline = inline_view_bytes(b"ok");
        let padded = unchecked_views(vec![u128::from_le_bytes(inline)], vec![]);
        validate_batch(&batch(padded)).expect("zero padding is valid");
        inline[9] = b'x';
        let dirty = unchecked_views(vec![u128::from_le_bytes(inline)], vec![]);
        let err = validate_batch(&batch(dirty)).expect_err("non-zero padding");
        assert!(err.to_string().contains("padding"), "{err}");
    }

    #[test]
    fn garbage_outside_the_strings_is_allowed() {
        let data = b"\xFF\xFF\xFFa perfectly fine string here";
        let view = long_view(20, 0, 3, data);
        let column = unchecked_views(vec![view], vec![Buffer::from(&data[..])]);
        validate_batch(&batch(column)).expect("only referenced bytes must be UTF-8");
    }

    #[test]
    fn rejects_structural_errors() {
        let data = b"a perfectly fine string here";
        let out_of_bounds = unchecked_views(
            vec![long_view(20, 1, 0, data)],
            vec![Buffer::from(&data[..])],
        );
        assert!(validate_batch(&batch(out_of_bounds)).is_err());
        let mut view = ByteView::from(long_view(20, 0, 0, data));
        view.prefix = u32::from_le_bytes(*b"nope");
        let wrong_prefix = unchecked_views(vec![view.as_u128()], vec![Buffer::from(&data[..])]);
        assert!(validate_batch(&batch(wrong_prefix)).is_err());
    }
}
