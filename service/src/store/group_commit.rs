//! Group commit for the embedded stores: one writer per store takes every
//! write waiting for it, stores them in one transaction and commits once, then
//! answers each. A commit waits for the disk (fsync) whatever it holds, so
//! concurrent writes share that wait instead of queueing for one each, and no
//! request is answered before its write is durable.

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::dto::{Item, NewItem};

/// Most writes in one commit.
pub const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before senders wait too.
const QUEUE: usize = 4096;

/// One write waiting for its commit.
pub struct PendingWrite {
    /// The validated item.
    pub item: NewItem,
    /// Where its stored form, or the commit's error, goes.
    pub reply: oneshot::Sender<Result<Item, StoreError>>,
}

/// The sending side of a store's writer.
#[derive(Clone)]
pub struct Writer {
    backend: &'static str,
    queue: mpsc::Sender<PendingWrite>,
}

impl Writer {
    /// A writer queue; the store's writer loop drains the receiver with
    /// [`next_batch`] (async) or [`next_batch_blocking`] (on a thread).
    pub fn new(backend: &'static str) -> (Self, mpsc::Receiver<PendingWrite>) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        (Self { backend, queue }, receiver)
    }

    /// Fails when the writer loop has stopped (it panicked, or its store was
    /// closed): every write would fail from then on.
    pub fn check_running(&self) -> Result<(), StoreError> {
        if self.queue.is_closed() {
            Err(StoreError::new(self.backend, "the writer has stopped"))
        } else {
            Ok(())
        }
    }

    /// Queues `item` and waits until the commit that holds it is durable.
    pub async fn write(&self, item: NewItem) -> Result<Item, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(PendingWrite { item, reply })
            .await
            .map_err(|_| StoreError::new(self.backend, "the writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::new(self.backend, "the writer stopped before the commit"))?
    }
}

/// Waits for a write, then takes every other one already waiting (up to
/// [`MAX_BATCH`]). `None` once every sender is gone.
pub async fn next_batch(receiver: &mut mpsc::Receiver<PendingWrite>) -> Option<Vec<PendingWrite>> {
    let first = receiver.recv().await?;
    Some(fill(first, receiver))
}

/// [`next_batch`] for a writer on its own thread.
pub fn next_batch_blocking(
    receiver: &mut mpsc::Receiver<PendingWrite>,
) -> Option<Vec<PendingWrite>> {
    let first = receiver.blocking_recv()?;
    Some(fill(first, receiver))
}

fn fill(first: PendingWrite, receiver: &mut mpsc::Receiver<PendingWrite>) -> Vec<PendingWrite> {
    let mut batch = Vec::with_capacity(receiver.len().min(MAX_BATCH) + 1);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(write) => batch.push(write),
            Err(_) => break,
        }
    }
    batch
}

/// Answers every write of a batch: each its item once the commit succeeded,
/// or all the commit's error.
pub fn answer(batch: Vec<PendingWrite>, result: Result<Vec<Item>, StoreError>) {
    match result {
        Ok(items) => {
            for (write, item) in batch.into_iter().zip(items) {
                let _ = write.reply.send(Ok(item));
            }
        }
        Err(error) => {
            for write in batch {
                let _ = write
                    .reply
                    .send(Err(StoreError::new(error.backend, &error.reason)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_whose_loop_ended_says_so_and_takes_no_write() {
        let (writer, queue) = Writer::new("test");
        writer
            .check_running()
            .expect("the loop's receiver is alive");
        drop(queue);
        let stopped = writer.check_running().expect_err("the loop is gone");
        assert!(stopped.reason.contains("writer has stopped"), "{stopped}");
        let write = writer.write(NewItem { name: "x".into() }).await;
        assert!(write.is_err(), "a write was queued with no writer");
    }

    #[tokio::test]
    async fn a_batch_takes_every_waiting_write_up_to_the_limit() {
        let (writer, mut queue) = Writer::new("test");
        let mut answers = Vec::new();
        for n in 0..MAX_BATCH + 3 {
            let writer = writer.clone();
            answers.push(tokio::spawn(async move {
                writer
                    .write(NewItem {
                        name: format!("item {n}"),
                    })
                    .await
            }));
        }
        while queue.len() < MAX_BATCH + 3 {
            tokio::task::yield_now().await;
        }
        let first = next_batch(&mut queue).await.unwrap();
        assert_eq!(first.len(), MAX_BATCH);
        let second = next_batch(&mut queue).await.unwrap();
        assert_eq!(second.len(), 3);
        let stored = |batch: &[PendingWrite], from: u64| {
            batch
                .iter()
                .zip(from..)
                .map(|(write, id)| Item {
                    id,
                    name: write.item.name.clone(),
                    created_at: chrono::Utc::now(),
                })
                .collect::<Vec<_>>()
        };
        let first_items = stored(&first, 1);
        answer(first, Ok(first_items));
        answer(second, Err(StoreError::new("test", "disk full")));
        let mut ok = 0;
        let mut failed = 0;
        for answer in answers {
            match answer.await.unwrap() {
                Ok(_) => ok += 1,
                Err(error) => {
                    assert!(error.reason.contains("disk full"), "{error}");
                    failed += 1;
                }
            }
        }
        assert_eq!((ok, failed), (MAX_BATCH, 3));
    }
}
