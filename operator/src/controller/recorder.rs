//! Kubernetes Events (`events.k8s.io/v1`) on Microservices.
//!
//! An event that repeats within [`SERIES_WINDOW`] becomes a series, as client-go and kube's
//! `Recorder` do it: one Event whose `series.count` rises, instead of a new object each time.
//! Unlike kube's `Recorder`, which keeps a whole copy of each Event it published in the last
//! six minutes (a hash table of full Event structs: about 9 MiB at 1,000 Microservices with
//! two events each), this keeps what a series patch needs: the Event's name and its count.
//! The note is part of what makes two events the same, so a different message is a new
//! Event rather than a series under the first one's message.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};
use serde_json::json;

/// How long after its last occurrence an event still counts as a repeat.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// How often the series past their window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The API server refuses a longer note.
const NOTE_LIMIT: usize = 1024;

/// Publishes Events for one controller instance.
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
    /// Makes the names of Events created in the same nanosecond differ.
    sequence: AtomicU32,
}

struct Recent {
    series: HashMap<u64, Series>,
    pruned: Instant,
}

/// An Event published lately: what repeating it takes.
struct Series {
    name: Box<str>,
    count: i32,
    last: Instant,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (`reportingController`), from `instance`
    /// (`reportingInstance`, the pod's name; the controller's name when unknown).
    pub fn new(client: Client, controller: &str, instance: Option<&str>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or(controller).to_owned(),
            recent: Mutex::new(Recent {
                series: HashMap::new(),
                pruned: Instant::now(),
            }),
            sequence: AtomicU32::new(0),
        }
    }

    /// Publishes `event` about the object `regarding`: a new Event, or the next count of the
    /// series of the same event published within [`SERIES_WINDOW`].
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = series_key(event, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let now = Instant::now();
        let repeat = self.repeat_of(key, now);
        let (name, count) = match repeat {
            Some((name, count)) => match self.patch_series(&events, &name, count).await {
                Ok(()) => (name, count),
                // The API server dropped the Event (its TTL) or someone deleted it: start anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    (self.create(&events, event, regarding).await?, 1)
                }
                Err(error) => return Err(error),
            },
            None => (self.create(&events, event, regarding).await?, 1),
        };
        if let Ok(mut recent) = self.recent.lock() {
            recent.series.insert(
                key,
                Series {
                    name,
                    count,
                    last: now,
                },
            );
        }
        Ok(())
    }

    /// The name and next count of the series `key`, when it is recent; forgets old series.
    fn repeat_of(&self, key: u64, now: Instant) -> Option<(Box<str>, i32)> {
        let mut recent = self.recent.lock().ok()?;
        if now.duration_since(recent.pruned) >= PRUNE_EVERY {
            recent
                .series
                .retain(|_, series| now.duration_since(series.last) < SERIES_WINDOW);
            recent.series.shrink_to_fit();
            recent.pruned = now;
        }
        recent
            .series
            .get(&key)
            .filter(|series| now.duration_since(series.last) < SERIES_WINDOW)
            .map(|series| (series.name.clone(), series.count.saturating_add(1)))
    }

    async fn patch_series(
        &self,
        events: &Api<K8sEvent>,
        name: &str,
        count: i32,
    ) -> Result<(), kube::Error> {
        let patch = json!({
            "series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}
        });
        events
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    async fn create(
        &self,
        events: &Api<K8sEvent>,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<Box<str>, kube::Error> {
        let now = Timestamp::now();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.{:x}{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond(),
            sequence
        );
        let k8s_event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.as_deref().map(truncate_note),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_name(event.type_).to_owned()),
            ..K8sEvent::default()
        };
        events.create(&PostParams::default(), &k8s_event).await?;
        Ok(name.into_boxed_str())
    }
}

/// What makes two events the same: the object (by uid, so a recreated object starts
/// afresh), the type, reason, action and note.
fn series_key(event: &Event, regarding: &ObjectReference) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
        type_name(event.type_),
        &event.reason,
        &event.action,
        &event.note,
    )
        .hash(&mut hasher);
    hasher.finish()
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// `note` cut to the API server's limit, on a character boundary, marked when cut.
fn truncate_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_owned();
    }
    const MARK: &str = "…";
    let mut end = NOTE_LIMIT - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "NotReady".to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        }
    }

    fn reference(uid: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("shop".to_owned()),
            name: Some("orders".to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn the_same_event_on_the_same_object_is_one_series() {
        assert_eq!(
            series_key(&event("down"), &reference("1")),
            series_key(&event("down"), &reference("1"))
        );
        assert_ne!(
            series_key(&event("down"), &reference("1")),
            series_key(&event("still down"), &reference("1")),
            "another message is another event"
        );
        assert_ne!(
            series_key(&event("down"), &reference("1")),
            series_key(&event("down"), &reference("2")),
            "a recreated object starts afresh"
        );
    }

    #[test]
    fn a_long_note_is_cut_to_the_limit_on_a_character_boundary() {
        let note = "é".repeat(NOTE_LIMIT);
        let cut = truncate_note(&note);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_note("short"), "short");
    }
}
