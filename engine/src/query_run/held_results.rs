//! [`HeldResults`]: result batches held back up to `fletch.result_buffer`, so that a
//! recovery that runs the final stage again stays invisible to the caller.

use std::collections::VecDeque;

use arrow::array::RecordBatch;

/// Result batches held back until the query ends or they pass the limit.
pub(super) struct HeldResults {
    batches: VecDeque<RecordBatch>,
    bytes: usize,
    limit: usize,
    /// Whether batches are returned as they come (the limit was passed or the end came).
    streaming: bool,
    /// Rows that reached the caller: once there are any, a restart would repeat them.
    delivered_rows: usize,
}

impl HeldResults {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            limit,
            streaming: false,
            delivered_rows: 0,
        }
    }

    pub(super) fn push(&mut self, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        self.batches.push_back(batch);
        self.streaming |= self.bytes > self.limit;
    }

    /// The result is complete: everything held may go.
    pub(super) fn end(&mut self) {
        self.streaming = true;
    }

    pub(super) fn pop(&mut self) -> Option<RecordBatch> {
        if !self.streaming {
            return None;
        }
        let batch = self.batches.pop_front()?;
        self.bytes -= batch.get_array_memory_size();
        self.delivered_rows += batch.num_rows();
        Some(batch)
    }

    pub(super) fn delivered_rows(&self) -> usize {
        self.delivered_rows
    }

    /// The final stage runs again (or the query failed): what it produced so far is
    /// produced again, or never.
    pub(super) fn discard(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array};

    use super::*;

    fn batch(rows: i32) -> RecordBatch {
        let column: ArrayRef = Arc::new(Int32Array::from_iter_values(0..rows));
        RecordBatch::try_from_iter([("n", column)]).expect("batch")
    }

    #[test]
    fn batches_wait_until_the_limit_passes_or_the_end_comes() {
        let one = batch(10).get_array_memory_size();
        let mut held = HeldResults::new(one * 2);
        held.push(batch(10));
        held.push(batch(10));
        assert!(held.pop().is_none(), "within the limit: held back");
        held.discard();
        assert_eq!(held.delivered_rows(), 0, "a restart now is invisible");
        held.push(batch(10));
        held.end();
        assert_eq!(held.pop().map(|b| b.num_rows()), Some(10));
        assert!(held.pop().is_none());
        assert_eq!(held.delivered_rows(), 10);

        let mut over = HeldResults::new(one);
        over.push(batch(10));
        over.push(batch(10));
        assert!(over.pop().is_some(), "past the limit batches stream");
    }
}
