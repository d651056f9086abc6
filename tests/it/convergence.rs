//! Convergence of incremental sync: many concurrent profile edits, joins, removals, quits,
//! role changes, renames, friend changes and deactivations while clients keep local replicas
//! and sync incrementally from the versions they hold (and from older ones they kept). At the
//! end every replica equals a fresh full sync and the database. The operations are chosen by
//! a seeded RNG: set `HERALD_CONVERGENCE_SEED` to replay a run's choices.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::{respond, sql, Client, Server, JWT_SECRET};

/// Users 1..=USERS exist; the first CLIENTS of them keep replicas and are never deactivated.
const USERS: u64 = 12;
const CLIENTS: u64 = 8;
/// Operations over all workers; a run takes a few seconds.
const OPERATIONS: usize = 300;
const WORKERS: u64 = 4;
/// At most this many groups are created during the run, and at most one is disbanded.
const EXTRA_GROUPS: usize = 3;
/// The statuses an operation may get: done, or refused after a concurrent change.
const ACCEPTED: [u16; 7] = [200, 201, 202, 204, 403, 404, 409];
const DEFAULT_SEED: u64 = 0x4845_5241_4c44;

const NICKNAMES: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];
const AVATARS: [&str; 3] = ["", "a1.png", "a2.png"];
const SIGNATURES: [&str; 4] = ["", "hi", "busy", "away"];
const GROUP_NAMES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];
const DESCRIPTIONS: [&str; 3] = ["", "d1", "d2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_sync_under_concurrent_changes_converges_to_a_full_sync_and_the_database() {
    let seed = std::env::var("HERALD_CONVERGENCE_SEED")
        .map(|s| s.parse().expect("HERALD_CONVERGENCE_SEED is a u64"))
        .unwrap_or(DEFAULT_SEED);
    eprintln!("convergence seed {seed} (replay with HERALD_CONVERGENCE_SEED={seed})");
    let started = Instant::now();
    // A short event log, trimmed every second: clients far behind get snapshots.
    let server = Arc::new(
        Server::start_with(&[("HERALD_EVENTS_KEPT", "10"), ("HERALD_EVENTS_TRIM_S", "1")]).await,
    );
    let gids = set_up(&server, seed).await;

    // Every client starts from a full sync taken before the first operation, so everything
    // after is incremental (or from an older copy it kept).
    let mut syncers = Vec::new();
    for uid in 1..=CLIENTS {
        let mut syncer = Syncer::new(&server, uid, seed).await;
        let mut replica = Replica::default();
        syncer.sync(&mut replica, Via::Ws).await;
        syncers.push((syncer, replica));
    }

    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = syncers
        .into_iter()
        .map(|(syncer, replica)| tokio::spawn(run_client(syncer, replica, done.clone())))
        .collect();
    let operator = Arc::new(Operator::new(server.clone(), seed, gids));
    let workers: Vec<_> = (0..WORKERS)
        .map(|index| tokio::spawn(operator.clone().work(index)))
        .collect();
    for worker in workers {
        worker
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    let operated = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let mut runs = Vec::new();
    for client in clients {
        runs.push(
            client
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        );
    }
    let deactivated = operator.deactivated.lock().unwrap().clone();
    eprintln!(
        "seed {seed}: {OPERATIONS} operations in {operated:?}, deactivated {deactivated:?}; \
         outcomes {:?}",
        operator.tally.lock().unwrap()
    );

    // The end state of each client: its replica, that of a client which slept through the
    // run, a fresh full sync, and the database.
    let mut ends = Vec::new();
    for mut run in runs {
        let mut full = Replica::default();
        run.syncer.sync_with(&mut full, json!({}), Via::Http).await;
        let mut sleeper = run.first.clone();
        run.syncer.sync(&mut sleeper, Via::Http).await;
        let stored = database_view(&server, run.syncer.uid).await;
        ends.push((run, sleeper, full, stored));
    }

    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let (mut syncs, mut restores, mut events, mut resnapshots, mut matched) = (0, 0, 0, 0, 0);
    for (run, sleeper, full, stored) in &ends {
        let s = &run.syncer;
        eprintln!(
            "seed {seed}: user {}: {} syncs, {} from an older copy, {} events applied, {} held \
             groups resent as snapshots, {} pushed events matched the log",
            s.uid,
            s.syncs,
            run.restores,
            s.events_applied,
            s.resnapshots,
            s.pushed_matched()
        );
        (syncs, restores) = (syncs + s.syncs, restores + run.restores);
        (events, resnapshots) = (events + s.events_applied, resnapshots + s.resnapshots);
        matched += s.pushed_matched();
        for (kind, count) in &s.kinds {
            *kinds.entry(kind.clone()).or_default() += count;
        }
        // Every difference of every user first; the assertions below stop at the first.
        for (what, differs) in [
            ("its replica", replica_differences(&run.replica, full)),
            ("the sleeper's replica", replica_differences(sleeper, full)),
            (
                "a full sync vs the database",
                differences(&full.view(), stored),
            ),
        ] {
            if !differs.is_empty() {
                eprintln!("seed {seed}: user {}: {what} differs:\n{differs}", s.uid);
            }
        }
    }
    eprintln!(
        "seed {seed}: {syncs} syncs, {restores} from an older copy, {events} events applied \
         incrementally ({kinds:?}), {resnapshots} held groups resent as snapshots, {matched} \
         pushed events matched the log; {:?} in all",
        started.elapsed()
    );

    for (run, sleeper, full, stored) in &ends {
        let uid = run.syncer.uid;
        assert_converged(
            seed,
            uid,
            "the incrementally synced replica",
            &run.replica,
            full,
        );
        // A client that slept through the whole run catches up in one incremental sync.
        assert_converged(seed, uid, "the replica from before the run", sleeper, full);
        let synced = full.view();
        assert_eq!(
            &synced,
            stored,
            "seed {seed}: user {uid}: a full sync (left) differs from the database (right):\n{}",
            differences(&synced, stored)
        );
        // A notice never announces a version that sync does not reach.
        let held = run.replica.versions();
        for (part, announced) in &run.syncer.announced {
            if let Some(have) = held.get(part) {
                assert!(
                    have >= announced,
                    "seed {seed}: user {uid}: sync_notify announced {part} {announced}, \
                     but the final sync holds {have}"
                );
            }
        }
        for gone in &deactivated {
            assert!(
                !full.mentions(*gone),
                "seed {seed}: deactivated user {gone} is still in user {uid}'s lists"
            );
        }
    }
    assert!(
        restores > 0,
        "seed {seed}: no client synced from an older copy"
    );
    assert!(
        events > 0,
        "seed {seed}: no event was ever applied incrementally"
    );
}

// ---- the set-up ----

/// Users with profiles, four groups (two made by the admin API, two by users), an admin in
/// the first and some friendships. Returns the gids.
async fn set_up(server: &Server, seed: u64) -> Vec<u64> {
    let users: Vec<Value> = (1..=USERS)
        .map(|uid| json!({"uid": uid, "nickname": format!("user{uid}"), "signature": "new"}))
        .collect();
    let (status, body) = server
        .admin_post("/v1/admin/users", json!({"users": users}))
        .await;
    assert_eq!(status, 200, "{body}");

    let mut gids = Vec::new();
    for (owner, members) in [(1, vec![1, 2, 3, 4, 5, 6]), (7, vec![7, 8, 9, 10, 11, 12])] {
        let group = json!({"name": format!("by admin {owner}"), "description": "from the backend",
                           "owner": owner, "members": members});
        let (status, body) = server.admin_post("/v1/admin/groups", group).await;
        assert_eq!(status, 200, "{body}");
        gids.push(body["gid"].as_u64().expect("a gid"));
    }
    for (owner, members) in [(3, vec![4, 5, 8, 9]), (10, vec![1, 2, 6, 11])] {
        let group = json!({"name": format!("by {owner}"), "description": "", "members": members});
        let (status, body) = as_user(
            server,
            owner,
            reqwest::Method::POST,
            "/v1/groups",
            Some(group),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["owner"], owner, "{body}");
        gids.push(body["gid"].as_u64().expect("a gid"));
    }
    let path = format!("/v1/admin/groups/{}/members/2/role", gids[0]);
    let (status, body) = server
        .admin(reqwest::Method::PUT, &path, Some(json!({"role": "admin"})))
        .await;
    assert_eq!(status, 204, "{body}");
    for pair in [
        [1, 2],
        [2, 3],
        [4, 5],
        [6, 1],
        [7, 8],
        [9, 10],
        [11, 12],
        [3, 9],
    ] {
        let (status, body) = server
            .admin_post("/v1/admin/friends", json!({"uids": pair}))
            .await;
        assert_eq!(status, 204, "seed {seed}: {body}");
    }
    gids
}

// ---- the operations ----

/// Runs random operations from several workers; shared by them.
struct Operator {
    server: Arc<Server>,
    seed: u64,
    gids: Mutex<Vec<u64>>,
    deactivated: Mutex<BTreeSet<u64>>,
    /// Friend requests answered `requested`, for a later acceptance.
    requests: Mutex<Vec<(u64, u64)>>,
    started: AtomicUsize,
    created: AtomicUsize,
    disbanded: AtomicUsize,
    /// (operation, status) → count.
    tally: Mutex<BTreeMap<(&'static str, u16), usize>>,
}

impl Operator {
    fn new(server: Arc<Server>, seed: u64, gids: Vec<u64>) -> Operator {
        Operator {
            server,
            seed,
            gids: Mutex::new(gids),
            deactivated: Mutex::default(),
            requests: Mutex::default(),
            started: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
            disbanded: AtomicUsize::new(0),
            tally: Mutex::default(),
        }
    }

    async fn work(self: Arc<Self>, index: u64) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        loop {
            let n = self.started.fetch_add(1, Ordering::SeqCst);
            if n >= OPERATIONS {
                return;
            }
            // One or two deactivations late in the run.
            if n == OPERATIONS * 7 / 10 || (n == OPERATIONS * 17 / 20 && rng.random_bool(0.5)) {
                self.deactivate(&mut rng).await;
            } else {
                self.random(&mut rng).await;
            }
        }
    }

    async fn random(&self, rng: &mut StdRng) {
        match rng.random_range(0..100) {
            0..=17 => self.edit_profile(rng).await,
            18..=21 => self.admin_edit_profile(rng).await,
            22..=31 => self.add_members(rng, false).await,
            32..=36 => self.add_members(rng, true).await,
            37..=43 => self.remove_member(rng, false).await,
            44..=46 => self.remove_member(rng, true).await,
            47..=53 => self.quit(rng).await,
            54..=59 => self.change_role(rng, false).await,
            60..=62 => self.change_role(rng, true).await,
            63..=67 => self.rename(rng, false).await,
            68..=69 => self.rename(rng, true).await,
            70..=78 => self.request_friend(rng).await,
            79..=84 => self.accept_friend(rng).await,
            85..=89 => self.unfriend(rng).await,
            90..=92 => self.admin_befriend(rng).await,
            93..=94 => self.admin_unfriend(rng).await,
            95..=97 => self.create_group(rng).await,
            _ => self.disband(rng).await,
        }
    }

    /// Checks the status is one an operation may get, and counts it.
    fn outcome(&self, what: &'static str, request: &str, (status, body): &(u16, Value)) {
        assert!(
            ACCEPTED.contains(status),
            "seed {}: {what}: {request} answered {status} {body}",
            self.seed
        );
        *self
            .tally
            .lock()
            .unwrap()
            .entry((what, *status))
            .or_default() += 1;
    }

    async fn user(
        &self,
        what: &'static str,
        uid: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let request = format!(
            "user {uid}: {method} {path} {}",
            body.clone().unwrap_or_default()
        );
        let got = as_user(&self.server, uid, method, path, body).await;
        self.outcome(what, &request, &got);
        got
    }

    async fn admin(
        &self,
        what: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let request = format!(
            "admin: {method} {path} {}",
            body.clone().unwrap_or_default()
        );
        let got = self.server.admin(method, path, body).await;
        self.outcome(what, &request, &got);
        got
    }

    /// Any user, deactivated ones included (they are refused).
    fn anyone(&self, rng: &mut StdRng) -> u64 {
        rng.random_range(1..=USERS)
    }

    /// A user not deactivated (as far as this worker knows).
    fn active(&self, rng: &mut StdRng) -> u64 {
        let deactivated = self.deactivated.lock().unwrap().clone();
        let active: Vec<u64> = (1..=USERS).filter(|u| !deactivated.contains(u)).collect();
        *active.choose(rng).expect("clients are never deactivated")
    }

    fn two_users(&self, rng: &mut StdRng) -> (u64, u64) {
        let a = self.active(rng);
        (a, self.other_than(rng, a))
    }

    /// An active user other than `uid`.
    fn other_than(&self, rng: &mut StdRng, uid: u64) -> u64 {
        loop {
            let other = self.active(rng);
            if other != uid {
                return other;
            }
        }
    }

    fn group(&self, rng: &mut StdRng) -> u64 {
        *self.gids.lock().unwrap().choose(rng).expect("groups")
    }

    /// A group and its members with their roles, as stored now.
    async fn roster(&self, rng: &mut StdRng) -> (u64, Vec<(u64, String)>) {
        let gid = self.group(rng);
        let rows = sql(
            &self.server.database_url,
            &format!("SELECT uid, role FROM group_members WHERE gid = {gid} ORDER BY uid"),
        )
        .await;
        let members = rows
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, String>(1)))
            .collect();
        (gid, members)
    }

    /// Mostly a member with one of `roles`, sometimes anyone (who may be refused).
    fn actor(&self, rng: &mut StdRng, members: &[(u64, String)], roles: &[&str]) -> u64 {
        let fitting: Vec<u64> = members
            .iter()
            .filter(|(_, role)| roles.contains(&role.as_str()))
            .map(|(uid, _)| *uid)
            .collect();
        match fitting.choose(rng) {
            Some(uid) if rng.random_bool(0.8) => *uid,
            _ => self.anyone(rng),
        }
    }

    /// A member other than `not`, if there is one.
    fn other_member(&self, rng: &mut StdRng, members: &[(u64, String)], not: u64) -> Option<u64> {
        let others: Vec<u64> = members
            .iter()
            .map(|(uid, _)| *uid)
            .filter(|uid| *uid != not)
            .collect();
        others.choose(rng).copied()
    }

    fn profile_edit(&self, rng: &mut StdRng) -> Value {
        let mut edit = json!({});
        while edit.as_object().unwrap().is_empty() {
            if rng.random_bool(0.6) {
                edit["nickname"] = json!(NICKNAMES.choose(rng).unwrap());
            }
            if rng.random_bool(0.4) {
                edit["avatar"] = json!(AVATARS.choose(rng).unwrap());
            }
            if rng.random_bool(0.4) {
                edit["signature"] = json!(SIGNATURES.choose(rng).unwrap());
            }
        }
        edit
    }

    async fn edit_profile(&self, rng: &mut StdRng) {
        let uid = self.anyone(rng);
        let edit = self.profile_edit(rng);
        let (status, body) = self
            .user(
                "PATCH /v1/me",
                uid,
                reqwest::Method::PATCH,
                "/v1/me",
                Some(edit.clone()),
            )
            .await;
        // The profile is read after the edit: a concurrent edit of the same user may show.
        if status == 200 {
            let profile: Result<Profile, _> = parse(&body, "PATCH /v1/me");
            assert!(
                profile.is_ok_and(|p| p.uid == uid),
                "seed {}: user {uid}: {edit} → {body}",
                self.seed
            );
        }
    }

    async fn admin_edit_profile(&self, rng: &mut StdRng) {
        let mut user = self.profile_edit(rng);
        user["uid"] = json!(self.anyone(rng));
        let body = json!({"users": [user]});
        self.admin(
            "admin upsert users",
            reqwest::Method::POST,
            "/v1/admin/users",
            Some(body),
        )
        .await;
    }

    async fn add_members(&self, rng: &mut StdRng, admin: bool) {
        let (gid, members) = self.roster(rng).await;
        let count = rng.random_range(1..=2);
        let uids: Vec<u64> = (0..count).map(|_| self.active(rng)).collect();
        let body = Some(json!({"uids": uids}));
        if admin {
            let path = format!("/v1/admin/groups/{gid}/members");
            self.admin("admin add members", reqwest::Method::POST, &path, body)
                .await;
        } else {
            let actor = self.actor(rng, &members, &["owner", "admin"]);
            let path = format!("/v1/groups/{gid}/members");
            self.user("add members", actor, reqwest::Method::POST, &path, body)
                .await;
        }
    }

    async fn remove_member(&self, rng: &mut StdRng, admin: bool) {
        let (gid, members) = self.roster(rng).await;
        if admin {
            let Some(uid) = self.other_member(rng, &members, 0) else {
                return;
            };
            let path = format!("/v1/admin/groups/{gid}/members/{uid}");
            self.admin("admin remove member", reqwest::Method::DELETE, &path, None)
                .await;
        } else {
            let actor = self.actor(rng, &members, &["owner", "admin"]);
            let Some(uid) = self.other_member(rng, &members, actor) else {
                return;
            };
            let path = format!("/v1/groups/{gid}/members/{uid}");
            self.user("remove member", actor, reqwest::Method::DELETE, &path, None)
                .await;
        }
    }

    async fn quit(&self, rng: &mut StdRng) {
        let (gid, members) = self.roster(rng).await;
        let uid = self.actor(rng, &members, &["owner", "admin", "member"]);
        if rng.random_bool(0.75) {
            let path = format!("/v1/groups/{gid}/leave");
            self.user("leave", uid, reqwest::Method::POST, &path, None)
                .await;
        } else {
            let path = format!("/v1/groups/{gid}/members/{uid}");
            self.user("remove oneself", uid, reqwest::Method::DELETE, &path, None)
                .await;
        }
    }

    async fn change_role(&self, rng: &mut StdRng, admin: bool) {
        let (gid, members) = self.roster(rng).await;
        let owner = members
            .iter()
            .find(|(_, role)| role == "owner")
            .map_or(0, |(uid, _)| *uid);
        let Some(uid) = self.other_member(rng, &members, owner) else {
            return;
        };
        let role = if rng.random_bool(0.5) {
            "admin"
        } else {
            "member"
        };
        let body = Some(json!({"role": role}));
        if admin {
            let path = format!("/v1/admin/groups/{gid}/members/{uid}/role");
            self.admin("admin change role", reqwest::Method::PUT, &path, body)
                .await;
        } else {
            let actor = self.actor(rng, &members, &["owner"]);
            let path = format!("/v1/groups/{gid}/members/{uid}/role");
            self.user("change role", actor, reqwest::Method::PUT, &path, body)
                .await;
        }
    }

    async fn rename(&self, rng: &mut StdRng, admin: bool) {
        let (gid, members) = self.roster(rng).await;
        let mut body = json!({"name": GROUP_NAMES.choose(rng).unwrap()});
        if rng.random_bool(0.5) {
            body["description"] = json!(DESCRIPTIONS.choose(rng).unwrap());
        }
        if admin {
            let path = format!("/v1/admin/groups/{gid}");
            self.admin(
                "admin rename group",
                reqwest::Method::PATCH,
                &path,
                Some(body),
            )
            .await;
        } else {
            let actor = self.actor(rng, &members, &["owner", "admin"]);
            let path = format!("/v1/groups/{gid}");
            self.user(
                "rename group",
                actor,
                reqwest::Method::PATCH,
                &path,
                Some(body),
            )
            .await;
        }
    }

    async fn request_friend(&self, rng: &mut StdRng) {
        let (from, to) = self.two_users(rng);
        let body = Some(json!({"uid": to}));
        let (status, _) = self
            .user(
                "request friend",
                from,
                reqwest::Method::POST,
                "/v1/friends",
                body,
            )
            .await;
        if status == 202 {
            self.requests.lock().unwrap().push((from, to));
        }
    }

    async fn accept_friend(&self, rng: &mut StdRng) {
        let request = {
            let mut requests = self.requests.lock().unwrap();
            if requests.is_empty() {
                None
            } else {
                let index = rng.random_range(0..requests.len());
                Some(requests.swap_remove(index))
            }
        };
        let Some((from, to)) = request else {
            return self.request_friend(rng).await;
        };
        let body = Some(json!({"uid": from}));
        self.user(
            "accept friend",
            to,
            reqwest::Method::POST,
            "/v1/friends",
            body,
        )
        .await;
    }

    async fn unfriend(&self, rng: &mut StdRng) {
        let uid = self.active(rng);
        let (status, body) = self
            .user(
                "list friends",
                uid,
                reqwest::Method::GET,
                "/v1/friends",
                None,
            )
            .await;
        let friends: Vec<u64> = if status == 200 {
            body["friends"]
                .as_array()
                .expect("friends")
                .iter()
                .map(|f| f["uid"].as_u64().expect("a uid"))
                .collect()
        } else {
            Vec::new()
        };
        let other = match friends.choose(rng) {
            Some(friend) if rng.random_bool(0.8) => *friend,
            _ => self.other_than(rng, uid),
        };
        let path = format!("/v1/friends/{other}");
        self.user("unfriend", uid, reqwest::Method::DELETE, &path, None)
            .await;
    }

    async fn admin_befriend(&self, rng: &mut StdRng) {
        let (a, b) = self.two_users(rng);
        let body = Some(json!({"uids": [a, b]}));
        self.admin(
            "admin befriend",
            reqwest::Method::POST,
            "/v1/admin/friends",
            body,
        )
        .await;
    }

    async fn admin_unfriend(&self, rng: &mut StdRng) {
        let (a, b) = self.two_users(rng);
        let path = format!("/v1/admin/friends/{a}/{b}");
        self.admin("admin unfriend", reqwest::Method::DELETE, &path, None)
            .await;
    }

    async fn create_group(&self, rng: &mut StdRng) {
        if self.created.fetch_add(1, Ordering::SeqCst) >= EXTRA_GROUPS {
            return self.edit_profile(rng).await;
        }
        let owner = self.active(rng);
        let count = rng.random_range(1..=4);
        let members: BTreeSet<u64> = (0..count)
            .map(|_| self.active(rng))
            .filter(|uid| *uid != owner)
            .collect();
        let body = json!({"name": GROUP_NAMES.choose(rng).unwrap(), "description": "",
                          "members": members});
        let (status, body) = self
            .user(
                "create group",
                owner,
                reqwest::Method::POST,
                "/v1/groups",
                Some(body),
            )
            .await;
        if status == 201 {
            self.gids
                .lock()
                .unwrap()
                .push(body["gid"].as_u64().expect("a gid"));
        }
    }

    async fn disband(&self, rng: &mut StdRng) {
        if self.disbanded.fetch_add(1, Ordering::SeqCst) >= 1 {
            return self.quit(rng).await;
        }
        let (gid, members) = self.roster(rng).await;
        let owner = self.actor(rng, &members, &["owner"]);
        let path = format!("/v1/groups/{gid}");
        self.user("disband", owner, reqwest::Method::DELETE, &path, None)
            .await;
    }

    async fn deactivate(&self, rng: &mut StdRng) {
        let candidates: Vec<u64> = {
            let deactivated = self.deactivated.lock().unwrap();
            (CLIENTS + 1..=USERS)
                .filter(|u| !deactivated.contains(u))
                .collect()
        };
        let uid = *candidates.choose(rng).expect("a user to deactivate");
        self.deactivated.lock().unwrap().insert(uid);
        let path = format!("/v1/admin/users/{uid}/deactivate");
        let (status, body) = self
            .admin("deactivate", reqwest::Method::POST, &path, None)
            .await;
        assert_eq!(
            status, 204,
            "seed {}: deactivating {uid}: {body}",
            self.seed
        );
    }
}

// ---- the clients ----

#[derive(Clone, Copy, Debug)]
enum Via {
    Ws,
    Http,
}

/// A client user's sync machinery: one WebSocket session and an HTTP token, and what it
/// checked across replies.
struct Syncer {
    server: Arc<Server>,
    uid: u64,
    seed: u64,
    session: Client,
    token: String,
    /// Every version seen in a reply, by part ("group 7 user_list_version"): the newest.
    seen: BTreeMap<String, u64>,
    /// Every version announced by a `sync_notify`, by part: the newest.
    announced: BTreeMap<String, u64>,
    /// Events by (gid, version) as sync returned them and as they were pushed.
    logged: BTreeMap<(u64, u64), Value>,
    pushed: BTreeMap<(u64, u64), Value>,
    syncs: usize,
    events_applied: usize,
    resnapshots: usize,
    /// Events applied incrementally, by kind ("role_changed to owner" for heirs).
    kinds: BTreeMap<String, usize>,
}

impl Syncer {
    async fn new(server: &Arc<Server>, uid: u64, seed: u64) -> Syncer {
        Syncer {
            server: server.clone(),
            uid,
            seed,
            session: server.connect(uid).await,
            token: server.token(uid).await,
            seen: BTreeMap::new(),
            announced: BTreeMap::new(),
            logged: BTreeMap::new(),
            pushed: BTreeMap::new(),
            syncs: 0,
            events_applied: 0,
            resnapshots: 0,
            kinds: BTreeMap::new(),
        }
    }

    /// Syncs from the versions `replica` holds and applies the reply to it.
    async fn sync(&mut self, replica: &mut Replica, via: Via) {
        let versions = replica.request();
        self.sync_with(replica, versions, via).await;
    }

    async fn sync_with(&mut self, replica: &mut Replica, body: Value, via: Via) {
        self.syncs += 1;
        let reply = match via {
            Via::Ws => {
                self.drain(Duration::ZERO).await;
                let mut frame = body.clone();
                frame["type"] = json!("sync");
                frame["id"] = json!(format!("sync-{}", self.syncs));
                let reply = self.session.request(frame.clone()).await;
                assert_eq!(
                    reply["type"], "synced",
                    "seed {}: user {}: {frame} → {reply}",
                    self.seed, self.uid
                );
                reply
            }
            Via::Http => {
                let request = self
                    .server
                    .http
                    .post(self.server.url("/v1/sync"))
                    .bearer_auth(&self.token)
                    .json(&body);
                let (status, reply) = respond(request).await;
                assert_eq!(
                    status, 200,
                    "seed {}: user {}: POST /v1/sync {body} → {reply}",
                    self.seed, self.uid
                );
                reply
            }
        };
        let checked = self
            .forward_only(&reply)
            .and_then(|()| replica.apply(self.uid, &reply));
        match checked {
            Ok(applied) => {
                self.events_applied += applied.events.len();
                self.resnapshots += applied.resnapshots;
                for event in applied.events {
                    let mut kind = event["event"].as_str().unwrap_or("?").to_owned();
                    if event["role"] == "owner" {
                        kind += " to owner";
                    }
                    *self.kinds.entry(kind).or_default() += 1;
                    self.log(event);
                }
            }
            Err(problem) => panic!(
                "seed {}: user {}: {problem}\nsync over {via:?} with {body}\nreply: {reply}",
                self.seed, self.uid
            ),
        }
    }

    /// Versions never go backwards from one reply to the next.
    fn forward_only(&mut self, reply: &Value) -> Result<(), String> {
        for (part, version) in reply_versions(reply) {
            let newest = self.seen.entry(part.clone()).or_default();
            if version < *newest {
                return Err(format!(
                    "{part} went back from {newest} to {version} between replies"
                ));
            }
            *newest = version;
        }
        Ok(())
    }

    /// Reads what was pushed to the session (within `wait`): notices and events.
    async fn drain(&mut self, wait: Duration) {
        while let Some(frame) = self.session.next_frame(wait).await {
            let frame = frame.unwrap_or_else(|close| {
                panic!(
                    "seed {}: user {}: session closed: {close:?}",
                    self.seed, self.uid
                )
            });
            match frame["type"].as_str() {
                Some("sync_notify") => {
                    for (part, version) in reply_versions(&frame) {
                        let newest = self.announced.entry(part).or_default();
                        *newest = (*newest).max(version);
                    }
                }
                Some("event") => {
                    let mut event = frame.clone();
                    event.as_object_mut().unwrap().remove("type");
                    let key = (num(&event, "gid"), num(&event, "version"));
                    if let Some(earlier) = self.pushed.insert(key, event.clone()) {
                        panic!(
                            "seed {}: user {}: event {key:?} pushed twice: {earlier} and {event}",
                            self.seed, self.uid
                        );
                    }
                    self.compare(key);
                }
                _ => {}
            }
        }
    }

    /// An event sync returned: the same (gid, version) is always the same event.
    fn log(&mut self, event: Value) {
        let key = (num(&event, "gid"), num(&event, "version"));
        if let Some(earlier) = self.logged.insert(key, event.clone()) {
            assert_eq!(
                earlier, event,
                "seed {}: user {}: two syncs returned different events as {key:?}",
                self.seed, self.uid
            );
        }
        self.compare(key);
    }

    /// A pushed event is the logged one: same place in the log, same content.
    fn compare(&self, key: (u64, u64)) {
        if let (Some(pushed), Some(logged)) = (self.pushed.get(&key), self.logged.get(&key)) {
            assert_eq!(
                pushed, logged,
                "seed {}: user {}: the event pushed as {key:?} (left) is not the one sync \
                 returned (right)",
                self.seed, self.uid
            );
        }
    }

    fn pushed_matched(&self) -> usize {
        self.pushed
            .keys()
            .filter(|k| self.logged.contains_key(k))
            .count()
    }
}

/// What a client task hands back: its replica, the one it had before the run, its syncer.
struct ClientRun {
    syncer: Syncer,
    replica: Replica,
    first: Replica,
    restores: usize,
}

/// Syncs over and over (WebSocket and HTTP alternating at random) until `done`, sometimes
/// from an older copy of its replica, as an app restarted from stored state would; then once
/// more after the last notices came.
async fn run_client(mut syncer: Syncer, mut replica: Replica, done: Arc<AtomicBool>) -> ClientRun {
    let mut rng = StdRng::seed_from_u64(syncer.seed ^ (syncer.uid << 40) ^ 0xC1_1E47);
    let first = replica.clone();
    let mut copies = vec![first.clone()];
    let mut restores = 0;
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..25))).await;
        if rng.random_bool(0.1) {
            replica = copies.choose(&mut rng).unwrap().clone();
            restores += 1;
        }
        let via = if rng.random_bool(0.5) {
            Via::Ws
        } else {
            Via::Http
        };
        syncer.sync(&mut replica, via).await;
        if rng.random_bool(0.15) {
            copies.push(replica.clone());
            if copies.len() > 6 {
                copies.remove(1);
            }
        }
    }
    // Notices are coalesced over 50 ms: wait for the last ones, then catch up.
    syncer.drain(Duration::from_millis(300)).await;
    syncer.sync(&mut replica, Via::Ws).await;
    syncer.drain(Duration::from_millis(300)).await;
    ClientRun {
        syncer,
        replica,
        first,
        restores,
    }
}

// ---- the replica ----

/// What one reply changed in a replica.
#[derive(Default)]
struct Applied {
    /// The events applied, in order.
    events: Vec<Value>,
    /// Groups the replica held that came as a snapshot (their log was trimmed).
    resnapshots: usize,
}

/// A profile as sync returns it (a UserInfo); unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct Profile {
    uid: u64,
    nickname: String,
    avatar: String,
    signature: String,
    active: bool,
    user_info_version: u64,
    nickname_version: u64,
    avatar_version: u64,
    signature_version: u64,
}

/// A group's info as the group list holds it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct GroupInfo {
    gid: u64,
    name: String,
    description: String,
    owner: u64,
    info_version: u64,
}

#[derive(Clone, Debug, Deserialize)]
struct Member {
    uid: u64,
    role: String,
}

/// One group's member list with the members' profiles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Members {
    user_list_version: u64,
    user_info_version: u64,
    roles: BTreeMap<u64, String>,
    users: BTreeMap<u64, Profile>,
}

/// What a client keeps: its profile, group list, member lists and friend list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Replica {
    me: Option<Profile>,
    group_list_version: u64,
    group_info_version: u64,
    group_list: BTreeMap<u64, GroupInfo>,
    groups: BTreeMap<u64, Members>,
    friends_user_list_version: u64,
    friends_user_info_version: u64,
    friends: BTreeSet<u64>,
    friend_users: BTreeMap<u64, Profile>,
}

impl Replica {
    /// The sync request for the versions held (all 0 for an empty replica).
    fn request(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|(gid, m)| {
                json!({"gid": gid, "user_list_version": m.user_list_version,
                       "user_info_version": m.user_info_version})
            })
            .collect();
        json!({
            "me": {"user_info_version": self.me.as_ref().map_or(0, |me| me.user_info_version)},
            "group_list": {"group_list_version": self.group_list_version,
                           "group_info_version": self.group_info_version},
            "groups": groups,
            "friends": {"user_list_version": self.friends_user_list_version,
                        "user_info_version": self.friends_user_info_version},
        })
    }

    /// Applies a reply as the contract says a client should; checks the events of every
    /// incremental group entry follow the version held without a gap. Returns the events
    /// applied.
    fn apply(&mut self, uid: u64, reply: &Value) -> Result<Applied, String> {
        let me: Profile = parse(&reply["me"], "me")?;
        if me.uid != uid {
            return Err(format!("`me` is user {}", me.uid));
        }
        self.me = Some(me);

        let list = &reply["group_list"];
        let listed: Vec<GroupInfo> = parse(&list["groups"], "group_list.groups")?;
        if flag(list, "snapshot")? {
            self.group_list = listed.into_iter().map(|g| (g.gid, g)).collect();
        } else {
            let left: Vec<u64> = parse_or_empty(&list["left"], "group_list.left")?;
            for gid in &left {
                if listed.iter().any(|g| g.gid == *gid) {
                    return Err(format!("group {gid} is both in group_list.groups and left"));
                }
                self.group_list.remove(gid);
            }
            for group in listed {
                self.group_list.insert(group.gid, group);
            }
        }
        self.group_list_version = version(list, "group_list_version")?;
        self.group_info_version = version(list, "group_info_version")?;

        let mut applied = Applied::default();
        for entry in parse_or_empty::<Vec<Value>>(&reply["groups"], "groups")? {
            let gid = version(&entry, "gid")?;
            if !self.group_list.contains_key(&gid) {
                return Err(format!(
                    "an entry for group {gid}, which is not in the group list"
                ));
            }
            let user_list_version = version(&entry, "user_list_version")?;
            let user_info_version = version(&entry, "user_info_version")?;
            let users: Vec<Profile> = parse_or_empty(&entry["users"], "groups[].users")?;
            if flag(&entry, "snapshot")? {
                if self.groups.contains_key(&gid) {
                    applied.resnapshots += 1;
                }
                let members: Vec<Member> = parse(&entry["members"], "groups[].members")?;
                let uids: BTreeSet<u64> = members.iter().map(|m| m.uid).collect();
                if uids != users.iter().map(|u| u.uid).collect() {
                    return Err(format!(
                        "group {gid}: a snapshot's users are not its members"
                    ));
                }
                self.groups.insert(
                    gid,
                    Members {
                        user_list_version,
                        user_info_version,
                        roles: members.into_iter().map(|m| (m.uid, m.role)).collect(),
                        users: users.into_iter().map(|u| (u.uid, u)).collect(),
                    },
                );
                continue;
            }
            let Some(held) = self.groups.get_mut(&gid) else {
                return Err(format!(
                    "an incremental entry for group {gid}, which the request did not hold"
                ));
            };
            let events: Vec<Value> = parse_or_empty(&entry["events"], "groups[].events")?;
            let mut due = held.user_list_version + 1;
            for event in &events {
                let at = version(event, "version")?;
                if at != due || event["gid"] != gid {
                    return Err(format!(
                        "group {gid}: held version {}, got event {event} where version {due} \
                         of group {gid} was due",
                        held.user_list_version
                    ));
                }
                due += 1;
            }
            if due - 1 != user_list_version {
                return Err(format!(
                    "group {gid}: events from version {} lead to {}, but the entry says \
                     user_list_version {user_list_version}",
                    held.user_list_version,
                    due - 1
                ));
            }
            let mut disbanded = false;
            for event in events {
                disbanded |= held.apply(&event)?;
                applied.events.push(event);
            }
            for user in users {
                held.users.insert(user.uid, user);
            }
            held.user_list_version = user_list_version;
            held.user_info_version = user_info_version;
            if disbanded {
                self.groups.remove(&gid);
            }
        }
        let listed = &self.group_list;
        self.groups.retain(|gid, _| listed.contains_key(gid));
        if let Some(gid) = listed.keys().find(|gid| !self.groups.contains_key(gid)) {
            return Err(format!(
                "group {gid} is in the group list but has no member list"
            ));
        }

        let friends = &reply["friends"];
        let added: Vec<u64> = parse_or_empty(&friends["added"], "friends.added")?;
        let users: Vec<Profile> = parse_or_empty(&friends["users"], "friends.users")?;
        if flag(friends, "snapshot")? {
            self.friends = added.into_iter().collect();
            self.friend_users = users.into_iter().map(|u| (u.uid, u)).collect();
        } else {
            let removed: Vec<u64> = parse_or_empty(&friends["removed"], "friends.removed")?;
            for uid in &removed {
                if added.contains(uid) {
                    return Err(format!("user {uid} is both in friends.added and removed"));
                }
                self.friends.remove(uid);
                self.friend_users.remove(uid);
            }
            self.friends.extend(added);
            for user in users {
                self.friend_users.insert(user.uid, user);
            }
        }
        self.friends_user_list_version = version(friends, "user_list_version")?;
        self.friends_user_info_version = version(friends, "user_info_version")?;
        Ok(applied)
    }

    /// Every version held, by part, named as `reply_versions` names them.
    fn versions(&self) -> BTreeMap<String, u64> {
        let mut held = BTreeMap::new();
        if let Some(me) = &self.me {
            held.insert("me user_info_version".to_owned(), me.user_info_version);
        }
        held.insert(
            "group_list group_list_version".to_owned(),
            self.group_list_version,
        );
        held.insert(
            "group_list group_info_version".to_owned(),
            self.group_info_version,
        );
        for (gid, m) in &self.groups {
            held.insert(
                format!("group {gid} user_list_version"),
                m.user_list_version,
            );
            held.insert(
                format!("group {gid} user_info_version"),
                m.user_info_version,
            );
        }
        held.insert(
            "friends user_list_version".to_owned(),
            self.friends_user_list_version,
        );
        held.insert(
            "friends user_info_version".to_owned(),
            self.friends_user_info_version,
        );
        held
    }

    /// Whether `uid` is anywhere in the group or friend lists.
    fn mentions(&self, uid: u64) -> bool {
        self.friends.contains(&uid)
            || self.friend_users.contains_key(&uid)
            || self
                .groups
                .values()
                .any(|m| m.roles.contains_key(&uid) || m.users.contains_key(&uid))
    }

    /// What the database also holds: profiles, groups with members and roles, friends.
    fn view(&self) -> View {
        View {
            me: self.me.clone(),
            lists: [
                self.group_list_version,
                self.group_info_version,
                self.friends_user_list_version,
                self.friends_user_info_version,
            ],
            groups: self
                .group_list
                .values()
                .map(|info| {
                    let members = self.groups.get(&info.gid).cloned().unwrap_or_default();
                    let group = GroupView {
                        info: info.clone(),
                        versions: [members.user_list_version, members.user_info_version],
                        roles: members.roles,
                        users: members.users,
                    };
                    (info.gid, group)
                })
                .collect(),
            friends: self.friends.clone(),
            friend_users: self.friend_users.clone(),
        }
    }
}

impl Members {
    /// Applies one event of the group's log; true when the group was disbanded.
    fn apply(&mut self, event: &Value) -> Result<bool, String> {
        let uid = || version(event, "uid");
        let role = || -> Result<String, String> {
            parse(&event["role"], "role").map_err(|e| format!("{e} in {event}"))
        };
        match event["event"].as_str() {
            Some("group_created") => {
                let owner = version(event, "owner")?;
                let uids: Vec<u64> = parse(&event["uids"], "uids")?;
                self.roles = uids
                    .into_iter()
                    .map(|uid| {
                        (
                            uid,
                            if uid == owner { "owner" } else { "member" }.to_owned(),
                        )
                    })
                    .collect();
            }
            Some("member_added") => {
                let earlier = self.roles.insert(uid()?, role()?);
                if earlier.is_some() {
                    return Err(format!("{event}: already a member here"));
                }
            }
            Some("member_removed") => {
                let uid = uid()?;
                if self.roles.remove(&uid).is_none() {
                    return Err(format!("{event}: not a member here"));
                }
                self.users.remove(&uid);
            }
            Some("role_changed") => match self.roles.get_mut(&uid()?) {
                Some(held) => *held = role()?,
                None => return Err(format!("{event}: not a member here")),
            },
            Some("group_disbanded") => return Ok(true),
            // group_updated changes no member list; unknown kinds are ignored.
            _ => {}
        }
        Ok(false)
    }
}

/// The part of a replica the database holds too.
#[derive(Debug, PartialEq, Eq)]
struct View {
    me: Option<Profile>,
    /// group_list_version, group_info_version, friends user_list_version and user_info_version.
    lists: [u64; 4],
    groups: BTreeMap<u64, GroupView>,
    friends: BTreeSet<u64>,
    friend_users: BTreeMap<u64, Profile>,
}

#[derive(Debug, PartialEq, Eq)]
struct GroupView {
    info: GroupInfo,
    /// user_list_version, user_info_version.
    versions: [u64; 2],
    roles: BTreeMap<u64, String>,
    users: BTreeMap<u64, Profile>,
}

// ---- the database ----

/// What the database says user `uid` should see, read after every operation has finished.
async fn database_view(server: &Server, uid: u64) -> View {
    let url = &server.database_url;
    let me = profiles(url, &format!("uid = {uid}")).await.remove(&uid);
    let lists = sql(
        url,
        &format!(
            "SELECT group_list_version, group_info_version, friend_list_version, \
                    friend_info_version \
             FROM user_versions WHERE uid = {uid}"
        ),
    )
    .await
    .first()
    .map_or([0; 4], |row| {
        [0, 1, 2, 3].map(|i| row.get::<_, i64>(i) as u64)
    });
    let mut groups = BTreeMap::new();
    let rows = sql(
        url,
        &format!(
            "SELECT g.gid, g.name, g.description, g.owner_uid, g.info_version, \
                    coalesce(v.user_list_version, 0), coalesce(v.user_info_version, 0) \
             FROM group_members m JOIN groups g ON g.gid = m.gid \
             LEFT JOIN group_versions v ON v.gid = m.gid \
             WHERE m.uid = {uid}"
        ),
    )
    .await;
    for row in rows {
        let gid = row.get::<_, i64>(0) as u64;
        let info = GroupInfo {
            gid,
            name: row.get(1),
            description: row.get(2),
            owner: row.get::<_, i64>(3) as u64,
            info_version: row.get::<_, i64>(4) as u64,
        };
        let versions = [5, 6].map(|i| row.get::<_, i64>(i) as u64);
        let roles = sql(
            url,
            &format!("SELECT uid, role FROM group_members WHERE gid = {gid}"),
        )
        .await
        .iter()
        .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
        .collect();
        let users = profiles(
            url,
            &format!("uid IN (SELECT uid FROM group_members WHERE gid = {gid})"),
        )
        .await;
        let group = GroupView {
            info,
            versions,
            roles,
            users,
        };
        groups.insert(gid, group);
    }
    let friends = format!("SELECT friend_uid FROM friends WHERE uid = {uid} AND active");
    let friend_users = profiles(url, &format!("uid IN ({friends})")).await;
    let friends = sql(url, &friends)
        .await
        .iter()
        .map(|row| row.get::<_, i64>(0) as u64)
        .collect();
    View {
        me,
        lists,
        groups,
        friends,
        friend_users,
    }
}

/// The stored profiles of the users `condition` selects, by uid.
async fn profiles(url: &str, condition: &str) -> BTreeMap<u64, Profile> {
    let statement = format!(
        "SELECT uid, nickname, avatar, signature, active, user_info_version, \
                nickname_version, avatar_version, signature_version \
         FROM users WHERE {condition}"
    );
    sql(url, &statement)
        .await
        .iter()
        .map(|row| {
            let version = |i| row.get::<_, i64>(i) as u64;
            let profile = Profile {
                uid: version(0),
                nickname: row.get(1),
                avatar: row.get(2),
                signature: row.get(3),
                active: row.get(4),
                user_info_version: version(5),
                nickname_version: version(6),
                avatar_version: version(7),
                signature_version: version(8),
            };
            (profile.uid, profile)
        })
        .collect()
}

// ---- private helpers ----

/// A user request with a token signed here: `Server::user` asks the admin API for a token,
/// which it refuses for a deactivated user, and operations act as users who may just have
/// been deactivated (and must then be refused with 403).
async fn as_user(
    server: &Server,
    uid: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let claims =
        json!({"sub": uid.to_string(), "exp": jsonwebtoken::get_current_timestamp() + 3600});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign a test token");
    let mut request = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    respond(request).await
}

/// Every version a reply or a `sync_notify` carries, by part.
fn reply_versions(frame: &Value) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut take = |part: String, value: &Value| {
        if let Some(v) = value.as_u64() {
            found.push((part, v));
        }
    };
    take(
        "me user_info_version".into(),
        &frame["me"]["user_info_version"],
    );
    for name in ["group_list_version", "group_info_version"] {
        take(format!("group_list {name}"), &frame["group_list"][name]);
    }
    for entry in frame["groups"].as_array().into_iter().flatten() {
        for name in ["user_list_version", "user_info_version"] {
            take(format!("group {} {name}", entry["gid"]), &entry[name]);
        }
    }
    for name in ["user_list_version", "user_info_version"] {
        take(format!("friends {name}"), &frame["friends"][name]);
    }
    found
}

fn parse<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("{what}: {e}: {value}"))
}

/// A list that may be left out when empty.
fn parse_or_empty<T: DeserializeOwned + Default>(value: &Value, what: &str) -> Result<T, String> {
    if value.is_null() {
        Ok(T::default())
    } else {
        parse(value, what)
    }
}

fn flag(object: &Value, name: &str) -> Result<bool, String> {
    object[name]
        .as_bool()
        .ok_or_else(|| format!("`{name}` is not a boolean in {object}"))
}

fn version(object: &Value, name: &str) -> Result<u64, String> {
    object[name]
        .as_u64()
        .ok_or_else(|| format!("`{name}` is not a number in {object}"))
}

fn num(object: &Value, name: &str) -> u64 {
    object[name]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` is not a number in {object}"))
}

/// Asserts two replicas are equal, listing where they differ.
fn assert_converged(seed: u64, uid: u64, what: &str, replica: &Replica, full: &Replica) {
    assert_eq!(
        replica,
        full,
        "seed {seed}: user {uid}: {what} (left) differs from a fresh full sync (right):\n{}",
        replica_differences(replica, full)
    );
}

fn replica_differences(a: &Replica, b: &Replica) -> String {
    let mut out = String::new();
    if a.me != b.me {
        out += &format!("me: {:?} vs {:?}\n", a.me, b.me);
    }
    let lists = |r: &Replica| {
        (
            r.group_list_version,
            r.group_info_version,
            r.friends_user_list_version,
            r.friends_user_info_version,
        )
    };
    if lists(a) != lists(b) {
        out += &format!(
            "(group_list_version, group_info_version, friends user_list_version, \
             friends user_info_version): {:?} vs {:?}\n",
            lists(a),
            lists(b)
        );
    }
    map_differences("group list", &a.group_list, &b.group_list, &mut out);
    map_differences("member list", &a.groups, &b.groups, &mut out);
    if a.friends != b.friends {
        out += &format!("friends: {:?} vs {:?}\n", a.friends, b.friends);
    }
    map_differences("friend profile", &a.friend_users, &b.friend_users, &mut out);
    out
}

fn differences(a: &View, b: &View) -> String {
    let mut out = String::new();
    if a.me != b.me {
        out += &format!("me: {:?} vs {:?}\n", a.me, b.me);
    }
    if a.lists != b.lists {
        out += &format!(
            "(group_list_version, group_info_version, friends user_list_version, \
             friends user_info_version): {:?} vs {:?}\n",
            a.lists, b.lists
        );
    }
    map_differences("group", &a.groups, &b.groups, &mut out);
    if a.friends != b.friends {
        out += &format!("friends: {:?} vs {:?}\n", a.friends, b.friends);
    }
    map_differences("friend profile", &a.friend_users, &b.friend_users, &mut out);
    out
}

fn map_differences<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    out: &mut String,
) {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            *out += &format!("{what} {key:?}: {x:?} vs {y:?}\n");
        }
    }
}
