//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one runs the controller and writes.
//!
//! It follows client-go's `leaderelection`: the holder renews the Lease every
//! [`LeaderElection::retry_period`] and stops leading when it could not renew for
//! [`LeaderElection::renew_deadline`]. A follower never compares the holder's `renewTime` with
//! its own clock (two nodes' clocks may disagree by minutes): it notes, on its own monotonic
//! clock, when it last saw the Lease change, and takes over only after the Lease stayed
//! unchanged for `leaseDurationSeconds`. Every write carries the `resourceVersion` it read, so
//! two candidates racing for the Lease cannot both win: the loser gets a conflict.
//!
//! Why not a crate: `kube-leader-election` decides expiry from the holder's timestamps (its
//! README says it is volatile to clock skew), and `kube-lease-manager` tolerates only a
//! configured skew bound and follows an older kube release than this workspace.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// Settings of the leader election.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    pub lease_namespace: String,
    /// This candidate's name in `holderIdentity` (the pod name).
    pub identity: String,
    /// How long followers wait, after they last saw the Lease change, before taking it over.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal. Shorter than
    /// `lease_duration`, so the holder stops before anyone may take over.
    pub renew_deadline: Duration,
    /// How often the holder renews, and how often a follower looks at the Lease.
    pub retry_period: Duration,
}

impl LeaderElection {
    /// Settings with client-go's timing: a 15 s lease, a 10 s renew deadline, a 2 s retry.
    pub fn new(lease_name: String, lease_namespace: String, identity: String) -> Self {
        Self {
            lease_name,
            lease_namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Whether the timings are consistent: retry < renew deadline < lease duration.
    pub fn check(&self) -> Result<()> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(Error::InvalidObject(format!(
                "leader election needs 0 < retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        Ok(())
    }
}

/// What a candidate should do with the Lease as it found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// This candidate holds it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a valid lease: wait.
    Wait,
}

/// Decides what `identity` does with `spec`, which this candidate has seen unchanged for
/// `unchanged_for` (measured on its own clock). The timestamps in `spec` play no part.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::TakeOver;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseDecision::TakeOver,
        Some(holder) if holder == identity => LeaseDecision::Renew,
        Some(_) => {
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(15))
                    .unwrap_or(15)
                    .max(1),
            );
            if unchanged_for >= duration {
                LeaseDecision::TakeOver
            } else {
                LeaseDecision::Wait
            }
        }
    }
}

/// The Lease as a follower last saw it change, and when (on the follower's clock).
#[derive(Debug)]
struct Observation {
    spec: Option<LeaseSpec>,
    since: Instant,
}

/// A candidate for the leader Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaderElection,
    observed: Mutex<Option<Observation>>,
}

impl LeaderElector {
    /// A candidate with the given settings.
    pub fn new(client: Client, settings: LeaderElection) -> Self {
        Self {
            api: Api::namespaced(client, &settings.lease_namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaderElection {
        &self.settings
    }

    /// One attempt to acquire or renew. Returns whether this candidate holds the Lease now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let duration_seconds = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15);
        match self.api.get_opt(&self.settings.lease_name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.lease_name.clone()),
                        namespace: Some(self.settings.lease_namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.identity.clone()),
                        lease_duration_seconds: Some(duration_seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(false),
                    Err(err) => Err(err.into()),
                }
            }
            Some(mut lease) => {
                let unchanged_for = self.unchanged_for(lease.spec.as_ref());
                let decision = decide(lease.spec.as_ref(), &self.settings.identity, unchanged_for);
                let spec = lease.spec.get_or_insert_default();
                match decision {
                    LeaseDecision::Wait => return Ok(false),
                    LeaseDecision::Renew => {}
                    LeaseDecision::TakeOver => {
                        spec.holder_identity = Some(self.settings.identity.clone());
                        spec.acquire_time = Some(MicroTime(now));
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(duration_seconds);
                // `replace` sends the resourceVersion read above: a concurrent writer makes it
                // fail with a conflict instead of both candidates believing they lead.
                match self
                    .api
                    .replace(&self.settings.lease_name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    /// How long the Lease has looked like `spec` to this candidate: a change (a renewal, a new
    /// holder) restarts the count.
    fn unchanged_for(&self, spec: Option<&LeaseSpec>) -> Duration {
        let Ok(mut observed) = self.observed.lock() else {
            return Duration::ZERO;
        };
        match observed.as_ref() {
            Some(seen) if seen.spec.as_ref() == spec => seen.since.elapsed(),
            _ => {
                *observed = Some(Observation {
                    spec: spec.cloned(),
                    since: Instant::now(),
                });
                Duration::ZERO
            }
        }
    }

    /// Waits until this candidate holds the Lease. Returns when the winning attempt started:
    /// the Lease was written no earlier, so followers cannot take it over before that instant
    /// plus the lease duration.
    pub async fn acquire(&self) -> Instant {
        info!(
            lease = %self.settings.lease_name,
            namespace = %self.settings.lease_namespace,
            identity = %self.settings.identity,
            "waiting to become the leader"
        );
        loop {
            let attempt = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.settings.identity, "became the leader");
                    return attempt;
                }
                Ok(false) => debug!("another replica leads"),
                Err(err) => warn!(error = %err, "could not read or write the leader lease"),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews the Lease, last written by an attempt that started at `renewed_at`, until no
    /// renewal succeeds within the renew deadline; then returns [`Error::LeadershipLost`].
    /// Never returns while leadership holds.
    ///
    /// Each attempt gets only the time left to the deadline: an API server that stops
    /// answering (a partition, a stalled connection) cannot keep this candidate leading past
    /// it. Since the deadline counts from when the last successful attempt *started*, and the
    /// Lease was written after that, the holder stops at least `lease_duration -
    /// renew_deadline` before any follower may take over.
    pub async fn keep_renewing(&self, mut renewed_at: Instant) -> Error {
        let lost = || Error::LeadershipLost(self.settings.lease_name.clone());
        loop {
            let deadline = renewed_at + self.settings.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.settings.retry_period).min(deadline))
                .await;
            let attempt = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed_at = attempt,
                Ok(Ok(false)) => {
                    warn!("another replica took the leader lease");
                    return lost();
                }
                Ok(Err(err)) => warn!(error = %err, "could not renew the leader lease"),
                Err(_) => warn!(
                    deadline = ?self.settings.renew_deadline,
                    "the API server did not answer a renewal of the leader lease within the renew deadline"
                ),
            }
            if renewed_at.elapsed() >= self.settings.renew_deadline {
                return lost();
            }
        }
    }

    /// How long a lost leader may take to stop writing: the margin between its renew deadline
    /// and the earliest takeover by a follower.
    pub fn stop_margin(&self) -> Duration {
        self.settings
            .lease_duration
            .saturating_sub(self.settings.renew_deadline)
    }

    /// Gives the Lease up at shutdown so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the leader lease"),
            Err(err) => warn!(error = %err, "could not release the leader lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_at: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).expect("time"))),
            ..Default::default()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn decides_who_leads() {
        assert_eq!(decide(None, "me", Duration::ZERO), LeaseDecision::TakeOver);
        assert_eq!(
            decide(Some(&lease(None, 100)), "me", Duration::ZERO),
            LeaseDecision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some("me"), 0)), "me", Duration::ZERO),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 100)), "me", 14 * SECOND),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 100)), "me", 15 * SECOND),
            LeaseDecision::TakeOver,
            "unchanged for a whole lease duration"
        );
    }

    #[test]
    fn the_holders_timestamps_play_no_part() {
        let now = Timestamp::now().as_second();
        // A holder whose clock runs an hour behind, or an hour ahead: only how long the
        // follower saw the Lease unchanged counts.
        for renewed_at in [now - 3600, now + 3600] {
            assert_eq!(
                decide(Some(&lease(Some("other"), renewed_at)), "me", SECOND),
                LeaseDecision::Wait
            );
            assert_eq!(
                decide(Some(&lease(Some("other"), renewed_at)), "me", 16 * SECOND),
                LeaseDecision::TakeOver
            );
        }
    }

    #[test]
    fn timings_must_nest() {
        let mut settings = LeaderElection::new("l".into(), "ns".into(), "me".into());
        assert!(settings.check().is_ok());
        settings.renew_deadline = settings.lease_duration;
        assert!(settings.check().is_err());
    }
}
