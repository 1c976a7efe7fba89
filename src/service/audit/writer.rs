//! The group-commit writer of the request path's audit records.

use super::*;
use std::path::Path;
use std::sync::Arc;

pub(super) enum Message {
    Append(NewRecord, tokio::sync::oneshot::Sender<Result<i64, String>>),
    Checkpoint(std::sync::mpsc::Sender<()>),
}

/// Group commit of the request path's audit records: one writer thread with its own SQLite
/// connection takes every record waiting, appends them in one transaction and answers each
/// caller once that transaction is on disk. Requests arriving together share one disk sync
/// instead of queueing behind one sync each, and readers (own connection, WAL) never wait for
/// it; a request still gets its answer only after its record is durable. The thread also
/// writes the checkpoints: every `checkpoint_every_records` records, every
/// `checkpoint_every_seconds` while records arrive, and when the writer stops.
pub struct AuditWriter {
    sender: std::sync::mpsc::Sender<Message>,
    anchor: Arc<Anchor>,
}

impl AuditWriter {
    /// Most records committed together.
    const MAX_BATCH: usize = 256;

    /// Opens the writer's connection on the state file of `data_dir`, anchors the log and
    /// starts its thread (which ends, after a last checkpoint, when the writer is dropped).
    pub fn start(data_dir: &Path, config: &AuditConfig) -> Result<AuditWriter, StoreError> {
        let anchor = Arc::new(Anchor::open(
            config.key_file.as_deref(),
            config.checkpoint_file.as_deref(),
            data_dir,
            true,
        )?);
        let mut connection = crate::service::store::open_connection(&StateEntry::Database.under(data_dir))?;
        let (keyed_from, mut checkpointed) = anchor.establish(&connection)?;
        let every_records = config.checkpoint_every_records.max(1) as i64;
        let every = std::time::Duration::from_secs(config.checkpoint_every_seconds.max(1));
        let (sender, receiver) = std::sync::mpsc::channel::<Message>();
        let thread_anchor = anchor.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let anchor = thread_anchor;
                let mut last_time = std::time::Instant::now();
                let mut head = checkpointed;
                loop {
                    let first = match receiver.recv_timeout(every) {
                        Ok(message) => Some(message),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut records = Vec::new();
                    let mut replies = Vec::new();
                    let mut flushes = Vec::new();
                    let mut next = first;
                    while let Some(message) = next.take() {
                        match message {
                            Message::Append(record, reply) => {
                                records.push(record);
                                replies.push(reply);
                            }
                            Message::Checkpoint(done) => flushes.push(done),
                        }
                        if records.len() < Self::MAX_BATCH {
                            next = receiver.try_recv().ok();
                        }
                    }
                    if !records.is_empty() {
                        match append_batch(&mut connection, &records, &anchor.key) {
                            Ok(seqs) => {
                                head = *seqs.last().expect("one per record");
                                for (reply, seq) in replies.into_iter().zip(seqs) {
                                    let _ = reply.send(Ok(seq));
                                }
                            }
                            Err(error) => {
                                for reply in replies {
                                    let _ = reply.send(Err(error.to_string()));
                                }
                            }
                        }
                    }
                    let due = head - checkpointed >= every_records
                        || (head > checkpointed && last_time.elapsed() >= every)
                        || !flushes.is_empty();
                    if due {
                        match anchor.checkpoint(&connection, keyed_from, checkpointed) {
                            Ok(seq) => {
                                checkpointed = seq;
                                head = head.max(seq);
                                last_time = std::time::Instant::now();
                            }
                            Err(error) => tracing::error!("audit checkpoint: {error}"),
                        }
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
                if let Err(error) = anchor.checkpoint(&connection, keyed_from, checkpointed) {
                    tracing::error!("audit checkpoint: {error}");
                }
            })
            .map_err(|source| StoreError::Io { path: "audit writer thread".into(), source })?;
        Ok(AuditWriter { sender, anchor })
    }

    /// Appends one record; resolves once it is committed.
    pub async fn append(&self, record: NewRecord) -> Result<i64, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.sender
            .send(Message::Append(record, reply))
            .map_err(|_| "the audit writer has stopped".to_string())?;
        answer.await.map_err(|_| "the audit writer has stopped".to_string())?
    }

    /// Writes a checkpoint of every record committed so far and waits for it (blocking).
    pub fn checkpoint_now(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.sender.send(Message::Checkpoint(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Checks the chain under the key and against the checkpoints.
    pub fn verify(&self, store: &Store) -> Result<VerifyReport, StoreError> {
        self.anchor.verify(&store.lock())
    }
}
