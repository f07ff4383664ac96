//! Group commit for workers' completion calls: calls that arrive while a completion
//! transaction is in flight wait and then share the next one.
//!
//! Every completion of a run updates that run's row (its unfinished-task counter) and often one
//! downstream row (a join's upstream counters), and on PostgreSQL holds those row locks until
//! its commit has reached the disk (about 2 to 4 ms here). Separate transactions for the same
//! run therefore queue one behind the other, one disk flush each; one transaction for all the
//! calls waiting at that moment costs one flush, whatever their number.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::store::{
    ClaimParams, ClaimedTask, Completion, CompletionBatch, CompletionOutcome, LogUpload, Rejection,
    Store, StoreError, now_micros,
};

/// What an unanswered call's [`StoreError::Interrupted`] names.
const COMPLETION_TRANSACTION: &str = "the completion transaction carrying this call";

/// What one call gets back: an outcome per completion, and the tasks claimed for it.
pub(crate) type Answer = (Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>);

/// One waiting call, owning its data: the call that applies it may not be its own.
struct Pending {
    completions: Vec<Completion>,
    logs: Vec<LogUpload>,
    claim: Option<ClaimParams>,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The calls waiting for the next completion transaction, and the turn to run it.
#[derive(Default)]
pub(crate) struct CompletionQueue {
    pending: Mutex<Vec<Pending>>,
    /// Held by the one transaction in flight, until every call in it has its answer.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl CompletionQueue {
    /// Applies a call's completions and claim, together with every call waiting at the time,
    /// in one transaction.
    pub(crate) async fn apply(
        &self,
        store: &Arc<dyn Store>,
        completions: &[Completion],
        logs: &[LogUpload],
        claim: Option<&ClaimParams>,
    ) -> Result<Answer, StoreError> {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Pending {
            completions: completions.to_vec(),
            logs: logs.to_vec(),
            claim: claim.cloned(),
            reply,
        });
        loop {
            let turn = tokio::select! {
                biased;
                answer = &mut answer => return answered(answer),
                turn = self.turn.clone().lock_owned() => turn,
            };
            // The transaction that just ended may have carried this call.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Interrupted(COMPLETION_TRANSACTION));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = std::mem::take(&mut *self.lock());
            if batch.is_empty() {
                continue;
            }
            // With the turn held and no answer yet, this call is in the batch; alone, it is
            // applied right here. A hop to another task costs two cross-thread wake-ups (half a
            // millisecond a step of a chain on this machine's two virtual cores), and a caller
            // that goes away then abandons only its own call, which is rolled back.
            if batch.len() == 1 {
                apply_batch(&**store, batch).await;
                drop(turn);
                continue;
            }
            // The transaction runs in its own task, holding the turn, so that a caller that goes
            // away (a worker's connection dropped) cannot abandon the other calls in it.
            let store = store.clone();
            tokio::spawn(async move {
                apply_batch(&*store, batch).await;
                drop(turn);
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The answer a waiting call received, or a failure the worker retries (the applying task
/// panicked and dropped the call unanswered; nothing was committed).
fn answered(
    answer: Result<Result<Answer, StoreError>, oneshot::error::RecvError>,
) -> Result<Answer, StoreError> {
    answer.unwrap_or(Err(StoreError::Interrupted(COMPLETION_TRANSACTION)))
}

/// Applies the waiting calls in one transaction and answers each. If the shared transaction
/// fails, each call is retried alone, so one call's failure is not every call's.
async fn apply_batch(store: &dyn Store, mut batch: Vec<Pending>) {
    // A claim's time is when its transaction runs, not when its call arrived: that is the
    // tasks' recorded start, and their lease runs from it.
    let now = now_micros();
    for pending in &mut batch {
        if let Some(claim) = &mut pending.claim {
            claim.now = now;
        }
    }
    let batches: Vec<CompletionBatch<'_>> = batch
        .iter()
        .map(|pending| CompletionBatch {
            completions: &pending.completions,
            logs: &pending.logs,
            claim: pending.claim.as_ref(),
        })
        .collect();
    let result = store.task_instance_complete_batches(&batches, now).await;
    drop(batches);
    match result {
        Ok(answers) => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                let _ = pending.reply.send(Ok(answer));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(pending) = batch.pop() {
                let _ = pending.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(message = "A shared completion transaction failed; applying its calls one by one.", %error);
            for pending in batch {
                let answer = store
                    .task_instance_complete_and_claim(
                        &pending.completions,
                        &pending.logs,
                        pending.claim.as_ref(),
                        now_micros(),
                    )
                    .await;
                let _ = pending.reply.send(answer);
            }
        }
    }
}
