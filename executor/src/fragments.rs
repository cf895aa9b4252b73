//! The executor's table fragments: every piece it holds of every in-memory table,
//! each with a reservation in the executor's memory pool for exactly its bytes.
//!
//! A piece becomes visible here only once it is complete; a load that dies midway
//! leaves no piece behind, and pieces of a dropped table or load are refused even if
//! they arrive late.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayData, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::compute::concat;
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::recent::RecentSet;
use fletch_transport::protocol::PieceId;

/// How many dropped tables and loads an executor remembers.
const DROPPED_MEMORY: usize = 4096;

/// (table uid, load, fragment)
type PieceKey = (String, u64, u64);

fn key(piece: &PieceId) -> PieceKey {
    (piece.table_uid.clone(), piece.load, piece.fragment)
}

/// One complete piece.
#[derive(Debug)]
pub(crate) struct Piece {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) bytes: usize,
    _reservation: MemoryReservation,
}

/// A piece being received; reserves memory batch by batch, so a table that does not
/// fit fails on the batch that crosses the limit, naming table, executor and sizes.
/// Counted as in flight until it is inserted or dropped, so dropping its load can wait
/// for its memory to come back.
pub(crate) struct PieceBuilder {
    id: PieceId,
    batches: Vec<RecordBatch>,
    bytes: usize,
    reservation: MemoryReservation,
    in_flight: Arc<InFlight>,
}

impl Drop for PieceBuilder {
    fn drop(&mut self) {
        self.reservation.free();
        self.batches.clear();
        self.in_flight.finish(&self.id.table_uid, self.id.load);
    }
}

/// Pieces being built, per (table uid, load).
#[derive(Default)]
struct InFlight {
    counts: Mutex<HashMap<(String, u64), usize>>,
    changed: Notify,
}

impl InFlight {
    fn start(&self, table_uid: &str, load: u64) {
        *self
            .counts
            .lock()
            .entry((table_uid.to_string(), load))
            .or_default() += 1;
    }

    fn finish(&self, table_uid: &str, load: u64) {
        let mut counts = self.counts.lock();
        let key = (table_uid.to_string(), load);
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
        drop(counts);
        self.changed.notify_waiters();
    }

    /// Waits until no piece of the table (of `load`, if given) is being built.
    async fn wait_idle(&self, table_uid: &str, load: Option<u64>) {
        loop {
            let changed = self.changed.notified();
            let busy = self
                .counts
                .lock()
                .keys()
                .any(|(uid, l)| uid == table_uid && load.is_none_or(|load| load == *l));
            if !busy {
                return;
            }
            changed.await;
        }
    }
}

impl PieceBuilder {
    pub(crate) fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = compact(batch)?;
        let size = batch.get_array_memory_size();
        self.reservation.try_grow(size)?;
        self.bytes += size;
        self.batches.push(batch);
        Ok(())
    }

    pub(crate) fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A batch that holds no more memory than its values need. Batches built for a full
/// `batch_size` (the exchange coalescer preallocates), string views pointing into
/// larger buffers, and arrays decoded from Flight (slices of a whole message body)
/// would otherwise pin far more memory than they hold, for as long as the table lives.
/// A column that starts inside its buffers (a slice, or a list decoded from Flight whose
/// first offset is not zero) is copied too: arrow 59's cast of such a list to
/// `FixedSizeList` reads from the start of the child values, not from the list's first
/// offset (apache/arrow-rs#10975), and pieces are read and cast for as long as the table
/// lives.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    let (schema, columns, rows) = batch.into_parts();
    let columns = columns
        .into_iter()
        .map(|column| {
            let column = match column.data_type() {
                DataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrayRef,
                DataType::BinaryView => Arc::new(column.as_binary_view().gc()) as ArrayRef,
                _ => column,
            };
            let needed = column.to_data().get_slice_memory_size()?;
            Ok(
                if starts_inside_its_buffers(&column.to_data())
                    || column.get_array_memory_size() > needed + needed / 2 + 1024
                {
                    // Concatenating with an empty slice copies into exact-size buffers.
                    let empty = column.slice(0, 0);
                    concat(&[column.as_ref(), empty.as_ref()])?
                } else {
                    column
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

fn starts_inside_its_buffers(data: &ArrayData) -> bool {
    if data.offset() != 0 {
        return true;
    }
    let first_offset_is_not_zero = |data: &ArrayData| match data.data_type() {
        DataType::List(_) | DataType::Map(..) => {
            data.buffers()[0].typed_data::<i32>().first() != Some(&0)
        }
        DataType::LargeList(_) => data.buffers()[0].typed_data::<i64>().first() != Some(&0),
        _ => false,
    };
    match data.data_type() {
        DataType::Struct(_) => data.child_data().iter().any(starts_inside_its_buffers),
        _ => !data.is_empty() && first_offset_is_not_zero(data),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentStats {
    /// Pieces of table fragments held.
    pub pieces: usize,
    /// Bytes of Arrow data those pieces hold.
    pub bytes: usize,
    /// Pieces read by tasks on this executor from its own memory, since it started.
    pub local_reads: usize,
    /// Pieces served to tasks on other executors over Flight, since it started.
    pub served_reads: usize,
}

pub(crate) struct FragmentPieces {
    pool: Arc<dyn MemoryPool>,
    in_flight: Arc<InFlight>,
    state: Mutex<PiecesState>,
    local_reads: AtomicUsize,
    served_reads: AtomicUsize,
}

struct PiecesState {
    pieces: HashMap<PieceKey, Arc<Piece>>,
    dropped_tables: RecentSet<String>,
    dropped_loads: RecentSet<(String, u64)>,
}

impl FragmentPieces {
    pub(crate) fn new(pool: Arc<dyn MemoryPool>) -> Self {
        Self {
            pool,
            in_flight: Arc::default(),
            state: Mutex::new(PiecesState {
                pieces: HashMap::new(),
                dropped_tables: RecentSet::new(DROPPED_MEMORY),
                dropped_loads: RecentSet::new(DROPPED_MEMORY),
            }),
            local_reads: AtomicUsize::new(0),
            served_reads: AtomicUsize::new(0),
        }
    }

    pub(crate) fn builder(&self, id: PieceId) -> PieceBuilder {
        let consumer = MemoryConsumer::new(format!(
            "table {} fragment {} (load {})",
            id.table, id.fragment, id.load
        ));
        self.in_flight.start(&id.table_uid, id.load);
        PieceBuilder {
            reservation: consumer.register(&self.pool),
            id,
            batches: Vec::new(),
            bytes: 0,
            in_flight: Arc::clone(&self.in_flight),
        }
    }

    /// Makes a complete piece readable; refused if its table or load was dropped.
    pub(crate) fn insert(&self, mut builder: PieceBuilder) -> Result<(), String> {
        let id = builder.id.clone();
        let mut state = self.state.lock();
        if state.dropped_tables.contains(&id.table_uid)
            || state
                .dropped_loads
                .contains(&(id.table_uid.clone(), id.load))
        {
            return Err(format!(
                "table {} (load {}) was dropped while fragment {} was being stored",
                id.table, id.load, id.fragment
            ));
        }
        let piece = Piece {
            batches: std::mem::take(&mut builder.batches),
            bytes: builder.bytes,
            _reservation: builder.reservation.take(),
        };
        state.pieces.insert(key(&id), Arc::new(piece));
        Ok(())
    }

    /// A piece this executor holds, for a task here (`local`) or a `DoGet`.
    pub(crate) fn get(&self, id: &PieceId, local: bool) -> Option<Arc<Piece>> {
        let piece = self.state.lock().pieces.get(&key(id)).cloned();
        if piece.is_some() {
            let counter = if local {
                &self.local_reads
            } else {
                &self.served_reads
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        piece
    }

    /// Frees every piece of a table incarnation, including pieces still arriving.
    pub(crate) async fn drop_table(&self, table_uid: &str) {
        self.drop_pieces(table_uid, None).await;
    }

    /// Frees every piece one load wrote, including pieces still arriving.
    pub(crate) async fn drop_load(&self, table_uid: &str, load: u64) {
        self.drop_pieces(table_uid, Some(load)).await;
    }

    /// Drops the pieces of a table (of one load, if given), refuses any that arrive
    /// later, and waits for those being received to let go of their memory.
    async fn drop_pieces(&self, table_uid: &str, load: Option<u64>) {
        let removed: Vec<_> = {
            let mut state = self.state.lock();
            match load {
                Some(load) => state.dropped_loads.insert((table_uid.to_string(), load)),
                None => state.dropped_tables.insert(table_uid.to_string()),
            }
            let keys: Vec<_> = state
                .pieces
                .keys()
                .filter(|k| k.0 == table_uid && load.is_none_or(|load| k.1 == load))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| state.pieces.remove(&k))
                .collect()
        };
        // Reservations are returned as the pieces drop, outside the lock.
        drop(removed);
        self.in_flight.wait_idle(table_uid, load).await;
    }

    pub(crate) fn stats(&self) -> FragmentStats {
        let state = self.state.lock();
        FragmentStats {
            pieces: state.pieces.len(),
            bytes: state.pieces.values().map(|p| p.bytes).sum(),
            local_reads: self.local_reads.load(Ordering::Relaxed),
            served_reads: self.served_reads.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Builder, ListBuilder};
    use arrow::compute::cast;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn stored_slices_start_at_offset_zero_and_cast_to_fixed_size_lists() {
        let mut builder = ListBuilder::new(Int64Builder::new());
        for row in [[1, 1, 2, 2, 3], [1, 2, 3, 4, 5], [3, 5, 3, 3, 3]] {
            builder.values().append_slice(&row);
            builder.append(true);
        }
        let list: ArrayRef = Arc::new(builder.finish());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "l",
            list.data_type().clone(),
            true,
        )]));
        let fixed =
            DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Int64, true)), 5);
        // As Flight decodes a slice: offset zero, but the offsets start past the child's start.
        let (field, offsets, values, nulls) = list.as_list::<i32>().clone().into_parts();
        let tail = arrow::array::ListArray::new(
            field,
            arrow::buffer::OffsetBuffer::new(offsets.inner().slice(2, 2)),
            values,
            nulls.map(|n| n.slice(2, 1)),
        );
        for column in [
            list.slice(1, 2),
            list.slice(2, 1),
            Arc::new(tail) as ArrayRef,
        ] {
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("batch");
            let stored = compact(batch.clone()).expect("compact");
            assert!(!starts_inside_its_buffers(&stored.column(0).to_data()));
            assert_eq!(stored, batch);
            assert_eq!(stored.column(0).offset(), 0);
            let as_fixed = cast(stored.column(0), &fixed).expect("cast");
            let back = cast(&as_fixed, list.data_type()).expect("cast back");
            assert_eq!(back.to_data(), batch.column(0).to_data());
        }
    }
}
