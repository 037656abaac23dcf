//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one runs the controller and writes.
//!
//! The holder renews the Lease every [`LeaderElection::renew_period`]; another replica takes it
//! over once `renewTime + leaseDurationSeconds` lies in the past. Every write carries the
//! `resourceVersion` it read, so two candidates racing for the Lease cannot both win: the
//! loser gets a conflict. A holder that cannot renew within the lease duration stops leading.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
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
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and how often a follower retries.
    pub renew_period: Duration,
}

impl LeaderElection {
    /// Settings with the usual timing: a 15 s lease renewed every 5 s.
    pub fn new(lease_name: String, lease_namespace: String, identity: String) -> Self {
        Self {
            lease_name,
            lease_namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
        }
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

/// Decides what `identity` does with `spec` at time `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::TakeOver;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseDecision::TakeOver,
        Some(holder) if holder == identity => LeaseDecision::Renew,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(15).max(1),
            ));
            let expired = match &spec.renew_time {
                Some(MicroTime(renewed)) => renewed
                    .checked_add(duration)
                    .map(|expiry| expiry < now)
                    .unwrap_or(true),
                None => true,
            };
            if expired {
                LeaseDecision::TakeOver
            } else {
                LeaseDecision::Wait
            }
        }
    }
}

/// A candidate for the leader Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaderElection,
}

impl LeaderElector {
    /// A candidate with the given settings.
    pub fn new(client: Client, settings: LeaderElection) -> Self {
        Self {
            api: Api::namespaced(client, &settings.lease_namespace),
            settings,
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
                let decision = decide(lease.spec.as_ref(), &self.settings.identity, now);
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

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        info!(
            lease = %self.settings.lease_name,
            namespace = %self.settings.lease_namespace,
            identity = %self.settings.identity,
            "waiting to become the leader"
        );
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.settings.identity, "became the leader");
                    return;
                }
                Ok(false) => debug!("another replica leads"),
                Err(err) => warn!(error = %err, "could not read or write the leader lease"),
            }
            tokio::time::sleep(self.settings.renew_period).await;
        }
    }

    /// Renews the Lease until a renewal fails for a whole lease duration, then returns
    /// [`Error::LeadershipLost`]. Never returns while leadership holds.
    pub async fn keep_renewing(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("another replica took the leader lease");
                    return Error::LeadershipLost(self.settings.lease_name.clone());
                }
                Err(err) => warn!(error = %err, "could not renew the leader lease"),
            }
            // Stop before the lease can expire, so two leaders never overlap.
            if last_renewal.elapsed() + self.settings.renew_period >= self.settings.lease_duration {
                return Error::LeadershipLost(self.settings.lease_name.clone());
            }
        }
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

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    #[test]
    fn decides_who_leads() {
        assert_eq!(decide(None, "me", at(100)), LeaseDecision::TakeOver);
        assert_eq!(
            decide(Some(&lease(None, 100)), "me", at(100)),
            LeaseDecision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some("me"), 0)), "me", at(100)),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 90)), "me", at(100)),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 80)), "me", at(100)),
            LeaseDecision::TakeOver,
            "expired 5 s ago"
        );
    }
}
