//! Every role against every endpoint, on objects owned by others: only the allowed calls
//! succeed; the rest are 404s indistinguishable from a missing object, and no body carries
//! another user's data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, cf, spawn_app};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Owner,
    OtherCitizen,
    Delegated,
    Professional,
    OfficeStaff,
    OtherStaff,
    FrontOffice,
    Auditor,
    Admin,
}

const ALL: [Who; 9] = [
    Who::Owner,
    Who::OtherCitizen,
    Who::Delegated,
    Who::Professional,
    Who::OfficeStaff,
    Who::OtherStaff,
    Who::FrontOffice,
    Who::Auditor,
    Who::Admin,
];

/// Who may read a path.
type Rule = fn(Who) -> bool;

fn sees_dossier(w: Who) -> bool {
    matches!(
        w,
        Who::Owner | Who::Delegated | Who::OfficeStaff | Who::FrontOffice | Who::Auditor
    )
}

fn sees_internal(w: Who) -> bool {
    matches!(w, Who::OfficeStaff | Who::FrontOffice | Who::Auditor)
}

/// A UUIDv7 next to `id`: what someone guessing sequential ids would try.
fn neighbour(id: &str) -> String {
    let last = id.chars().last().unwrap();
    let swapped = if last == '0' { '1' } else { '0' };
    format!("{}{swapped}", &id[..id.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_meets_every_endpoint() {
    let app = spawn_app().await;
    let owner_cf = cf(200);
    let mut tokens = BTreeMap::new();
    tokens.insert(Who::Owner, app.citizen(200).await);
    tokens.insert(Who::OtherCitizen, app.citizen(201).await);
    tokens.insert(
        Who::Delegated,
        app.user("professional", Some(&cf(202)), &[]).await,
    );
    tokens.insert(
        Who::Professional,
        app.user("professional", Some(&cf(203)), &[]).await,
    );
    tokens.insert(Who::OfficeStaff, app.staff(&["edilizia"]).await);
    tokens.insert(Who::OtherStaff, app.staff(&["tributi", "suap"]).await);
    let desk = app.cli(&[
        "user",
        "add",
        "--role",
        "staff",
        "--name",
        "Sportello",
        "--front-office",
    ]);
    let desk: Value = serde_json::from_slice(&desk.stdout).unwrap();
    tokens.insert(Who::FrontOffice, desk["token"].as_str().unwrap().to_owned());
    tokens.insert(Who::Auditor, app.user("auditor", None, &[]).await);
    tokens.insert(Who::Admin, app.user("admin", None, &[]).await);

    let dossier = app
        .open_dossier(&tokens[&Who::Owner], "scia-edilizia", &owner_cf)
        .await;
    let d = dossier["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{d}/delegations")))
        .bearer_auth(&tokens[&Who::Owner])
        .json(&json!({"professional_cf": cf(202)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let public = app
        .add_text(
            &tokens[&Who::Owner],
            &d,
            "segretissimo pubblico",
            "Pubblico",
            "public",
        )
        .await;
    let internal = app
        .add_text(
            &tokens[&Who::OfficeStaff],
            &d,
            "segretissimo interno",
            "Interno",
            "internal",
        )
        .await;
    let p = public["id"].as_str().unwrap().to_owned();
    let i = internal["id"].as_str().unwrap().to_owned();
    app.indexed().await;

    let missing = app
        .get(
            &tokens[&Who::Owner],
            &format!("/v1/dossiers/{}", uuid::Uuid::now_v7()),
        )
        .await;
    let missing_body = missing.text().await.unwrap();

    // (path, who may read it)
    let reads: Vec<(String, Rule)> = vec![
        (format!("/v1/dossiers/{d}"), sees_dossier),
        (format!("/v1/dossiers/{d}/documents"), sees_dossier),
        (format!("/v1/dossiers/{d}/delegations"), sees_dossier),
        (format!("/v1/documents/{p}"), sees_dossier),
        (format!("/v1/documents/{p}/content"), sees_dossier),
        (format!("/v1/documents/{p}/text"), sees_dossier),
        (format!("/v1/documents/{p}/versions"), sees_dossier),
        (
            format!("/v1/documents/{p}/versions/1/content"),
            sees_dossier,
        ),
        (format!("/v1/documents/{i}"), sees_internal),
        (format!("/v1/documents/{i}/content"), sees_internal),
        (format!("/v1/documents/{i}/text"), sees_internal),
        (format!("/v1/documents/{i}/versions"), sees_internal),
        (
            format!("/v1/documents/{i}/versions/1/content"),
            sees_internal,
        ),
    ];
    for who in ALL {
        let token = &tokens[&who];
        for (path, allowed) in &reads {
            let response = app.get(token, path).await;
            let status = response.status();
            let body = response.text().await.unwrap();
            if allowed(who) {
                assert_eq!(status, 200, "{who:?} GET {path}");
            } else {
                assert_eq!(status, 404, "{who:?} GET {path}");
                assert_eq!(
                    body, missing_body,
                    "{who:?} GET {path}: a denial must look like absence"
                );
            }
            if !sees_internal(who) {
                assert!(
                    !body.contains("interno"),
                    "{who:?} GET {path} leaked the internal document"
                );
            }
            if !sees_dossier(who) {
                assert!(
                    !body.contains(&owner_cf) && !body.contains("segretissimo"),
                    "{who:?} GET {path} leaked"
                );
            }
        }
        // Guessed ids: the next one in sequence and a random one.
        for guess in [neighbour(&d), uuid::Uuid::now_v7().to_string()] {
            let response = app.get(token, &format!("/v1/dossiers/{guess}")).await;
            assert_eq!(response.status(), 404);
            assert_eq!(response.text().await.unwrap(), missing_body);
        }
        for guess in [neighbour(&p), uuid::Uuid::now_v7().to_string()] {
            let response = app
                .get(token, &format!("/v1/documents/{guess}/content"))
                .await;
            assert_eq!(response.status(), 404);
        }
        // Search: the owner's words reach exactly those who may read them.
        let found: Value = app
            .search(token, &[("q", "segretissimo")])
            .await
            .json()
            .await
            .unwrap();
        let expected = u64::from(sees_dossier(who)) + u64::from(sees_internal(who));
        assert_eq!(found["total"], expected, "{who:?} search");
    }
    // Writes, once every read was checked: add a document, add a version, grant a delegation.
    for who in ALL {
        let token = &tokens[&who];
        let upload = app
            .upload(
                token,
                &format!("/v1/dossiers/{d}/documents"),
                b"x".to_vec(),
                "x.txt",
                &[("visibility", "public")],
            )
            .await
            .status();
        let may_write = matches!(
            who,
            Who::Owner | Who::Delegated | Who::OfficeStaff | Who::FrontOffice
        );
        let expected_upload = if may_write {
            201
        } else if sees_dossier(who) {
            403
        } else {
            404
        };
        assert_eq!(upload, expected_upload, "{who:?} upload");
        let version = app
            .upload(
                token,
                &format!("/v1/documents/{p}/versions"),
                format!("v {who:?}").into_bytes(),
                "v.txt",
                &[],
            )
            .await
            .status();
        // The public document is the applicant's: only the applicant's side adds its versions.
        let expected_version = if matches!(who, Who::Owner | Who::Delegated) {
            201
        } else if sees_dossier(who) {
            403
        } else {
            404
        };
        assert_eq!(version, expected_version, "{who:?} new version");
        let delegation = app
            .client
            .post(app.url(&format!("/v1/dossiers/{d}/delegations")))
            .bearer_auth(token)
            .json(&json!({"professional_cf": cf(204)}))
            .send()
            .await
            .unwrap()
            .status();
        let may_delegate = matches!(who, Who::Owner | Who::OfficeStaff | Who::FrontOffice);
        let expected_delegation = if may_delegate {
            201
        } else if sees_dossier(who) {
            403
        } else {
            404
        };
        assert_eq!(delegation, expected_delegation, "{who:?} delegation");
        let listed: Value = app.get(token, "/v1/dossiers").await.json().await.unwrap();
        let ids: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids.contains(&d.as_str()),
            sees_dossier(who),
            "{who:?} listing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_that_starts_after_a_revocation_returns_the_dossier() {
    let app = spawn_app().await;
    let citizen = app.citizen(210).await;
    let professional = app.user("professional", Some(&cf(211)), &[]).await;
    let d = app.open_dossier(&citizen, "cila", &cf(210)).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let doc = app
        .add_text(
            &citizen,
            &id,
            "computo metrico pangolino",
            "Computo",
            "public",
        )
        .await;
    let content_path = format!("/v1/documents/{}/content", doc["id"].as_str().unwrap());
    let r = app
        .client
        .post(app.url(&format!("/v1/dossiers/{id}/delegations")))
        .bearer_auth(&citizen)
        .json(&json!({"professional_cf": cf(211)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.indexed().await;

    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let app = app.clone();
        let stop = stop.clone();
        let professional = professional.clone();
        let content_path = content_path.clone();
        workers.push(tokio::spawn(async move {
            let mut log = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let started = Instant::now();
                let visible = if worker % 2 == 0 {
                    let body: Value = app
                        .search(&professional, &[("q", "pangolino")])
                        .await
                        .json()
                        .await
                        .unwrap();
                    body["total"] == 1
                } else {
                    app.get(&professional, &content_path).await.status() == 200
                };
                log.push((started, visible));
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/dossiers/{id}/delegations/{}", cf(211))))
        .bearer_auth(&citizen)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let revoked = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut before = 0;
    let mut after = 0;
    for w in workers {
        for (started, visible) in w.await.unwrap() {
            if started > revoked {
                after += 1;
                assert!(
                    !visible,
                    "a request started after the revocation saw the dossier"
                );
            } else if started + Duration::from_millis(5) < revoked {
                before += 1;
            }
        }
    }
    assert!(
        before > 10 && after > 10,
        "too few requests around the revocation: {before} before, {after} after"
    );
}

/// A deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What a caller may read, computed directly from the database with the rules of
/// DESIGN.md §3 written out independently of the server's code.
async fn reference(
    app: &TestApp,
    role: &str,
    user_cf: Option<&str>,
    user_id: &str,
) -> BTreeSet<String> {
    let pool = app.services.db.pool();
    let rows: Vec<String> = match role {
        "citizen" => sqlx::query_scalar("select doc.id from document doc join dossier d on d.id = doc.dossier_id where d.applicant_cf = $1 and doc.visibility = 'public'")
            .bind(user_cf.unwrap().to_owned())
            .fetch_all(pool).await.unwrap(),
        "professional" => sqlx::query_scalar("select doc.id from document doc join dossier d on d.id = doc.dossier_id where doc.visibility = 'public' and (d.applicant_cf = $1 or d.id in (select dossier_id from delegation where professional_cf = $2 and revoked_at is null))")
            .bind(user_cf.unwrap().to_owned())
            .bind(user_cf.unwrap().to_owned())
            .fetch_all(pool).await.unwrap(),
        "staff" => sqlx::query_scalar("select doc.id from document doc join dossier d on d.id = doc.dossier_id where d.office_code in (select office_code from user_office where user_id = $1)")
            .bind(user_id.to_owned())
            .fetch_all(pool).await.unwrap(),
        _ => sqlx::query_scalar("select id from document").fetch_all(pool).await.unwrap(),
    };
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_users_grants_and_documents_match_a_reference_from_the_database() {
    let app = spawn_app().await;
    let admin = app.user("admin", None, &[]).await;
    let mut rng = Rng(20261126);
    let procedures = [
        ("cila", "edilizia"),
        ("rimborso-imu", "tributi"),
        ("dehors", "suap"),
        ("cambio-residenza", "anagrafe"),
    ];
    let offices: Vec<&str> = procedures.iter().map(|p| p.1).collect();
    // (role, cf, token, user id)
    let mut callers: Vec<(String, Option<String>, String, String)> = Vec::new();
    for n in 0..6u32 {
        callers.push((
            "citizen".into(),
            Some(cf(300 + n)),
            app.citizen(300 + n).await,
            String::new(),
        ));
    }
    for n in 0..3u32 {
        callers.push((
            "professional".into(),
            Some(cf(320 + n)),
            app.user("professional", Some(&cf(320 + n)), &[]).await,
            String::new(),
        ));
    }
    for _ in 0..3 {
        let mut mine: Vec<&str> = offices
            .iter()
            .copied()
            .filter(|_| rng.next(2) == 0)
            .collect();
        if mine.is_empty() {
            mine.push(offices[rng.next(4) as usize]);
        }
        callers.push(("staff".into(), None, app.staff(&mine).await, String::new()));
    }
    callers.push((
        "auditor".into(),
        None,
        app.user("auditor", None, &[]).await,
        String::new(),
    ));
    for c in &mut callers {
        let me: Value = app.get(&c.2, "/v1/me").await.json().await.unwrap();
        c.3 = me["id"].as_str().unwrap().to_owned();
    }
    let desk = app.user("staff", None, &offices).await;
    let mut dossiers = Vec::new();
    for n in 0..14u32 {
        let applicant = (rng.next(9)) as usize; // citizens and professionals apply
        let (procedure, _) = procedures[rng.next(4) as usize];
        let d = app
            .open_dossier(&desk, procedure, callers[applicant].1.as_deref().unwrap())
            .await;
        let id = d["id"].as_str().unwrap().to_owned();
        for m in 0..(1 + rng.next(3)) {
            let visibility = if rng.next(3) == 0 {
                "internal"
            } else {
                "public"
            };
            app.add_text(
                &desk,
                &id,
                &format!("proprieta comune {n} {m}"),
                "Atto",
                visibility,
            )
            .await;
        }
        dossiers.push(id);
    }
    let check = |round: &'static str| {
        let app = &app;
        let callers = &callers;
        async move {
            app.indexed().await;
            for (role, cf, token, id) in callers {
                let want = reference(app, role, cf.as_deref(), id).await;
                let got: Value = app
                    .search(token, &[("q", "proprieta"), ("limit", "100")])
                    .await
                    .json()
                    .await
                    .unwrap();
                let ids: BTreeSet<String> = got["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["document_id"].as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(ids, want, "{round}: {role} {cf:?}");
                assert_eq!(got["total"], want.len() as u64, "{round}: {role} total");
            }
        }
    };
    check("initial").await;
    // Random grants, then random revocations and office moves.
    let mut granted = Vec::new();
    for _ in 0..12 {
        let d = &dossiers[rng.next(dossiers.len() as u64) as usize];
        let professional = cf(320 + rng.next(3) as u32);
        let r = app
            .client
            .post(app.url(&format!("/v1/dossiers/{d}/delegations")))
            .bearer_auth(&desk)
            .json(&json!({"professional_cf": professional}))
            .send()
            .await
            .unwrap();
        // The professional may be the applicant: then the grant is refused.
        assert!(r.status() == 201 || r.status() == 400, "{}", r.status());
        if r.status() == 201 {
            granted.push((d.clone(), professional));
        }
    }
    check("after grants").await;
    for (d, professional) in granted.iter().step_by(2) {
        let r = app
            .client
            .delete(app.url(&format!("/v1/dossiers/{d}/delegations/{professional}")))
            .bearer_auth(&desk)
            .send()
            .await
            .unwrap();
        assert!(r.status() == 204 || r.status() == 404);
    }
    for c in callers.iter().filter(|c| c.0 == "staff") {
        let new_office = offices[rng.next(4) as usize];
        let r = app
            .client
            .put(app.url(&format!("/v1/users/{}/offices", c.3)))
            .bearer_auth(&admin)
            .json(&json!({"offices": [new_office]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    check("after revocations and moves").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_professional_with_hundreds_of_clients_sees_exactly_the_delegated_dossiers() {
    let app = spawn_app().await;
    let professional = app.user("professional", Some(&cf(400)), &[]).await;
    let desk = app.staff(&["anagrafe"]).await;
    let clients = 200u32;
    let mut dossiers = Vec::new();
    for n in 0..clients {
        let d = app
            .open_dossier(&desk, "cambio-residenza", &cf(1000 + n))
            .await;
        let id = d["id"].as_str().unwrap().to_owned();
        app.add_text(
            &desk,
            &id,
            &format!("dichiarazione residenza cliente{n}"),
            "Dichiarazione",
            "public",
        )
        .await;
        if n % 4 != 3 {
            let r = app
                .client
                .post(app.url(&format!("/v1/dossiers/{id}/delegations")))
                .bearer_auth(&desk)
                .json(&json!({"professional_cf": cf(400)}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        dossiers.push(id);
    }
    app.indexed().await;
    let delegated = (0..clients).filter(|n| n % 4 != 3).count() as u64;
    let all: Value = app
        .search(&professional, &[("q", "dichiarazione")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], delegated);
    assert_eq!(all["facets"]["procedure"]["cambio-residenza"], delegated);
    for n in [3u32, 7, 199] {
        let hidden: Value = app
            .search(&professional, &[("q", &format!("cliente{n}"))])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(hidden["total"], 0, "client {n} did not delegate");
    }
    // Revoke half of them: the very next search reflects it.
    for (n, id) in dossiers.iter().enumerate().filter(|(n, _)| n % 4 == 0) {
        let r = app
            .client
            .delete(app.url(&format!("/v1/dossiers/{id}/delegations/{}", cf(400))))
            .bearer_auth(&desk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "client {n}");
    }
    let revoked = (0..clients).filter(|n| n % 4 == 0).count() as u64;
    let after: Value = app
        .search(&professional, &[("q", "dichiarazione")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["total"], delegated - revoked);
    let listed: Value = app
        .get(&professional, "/v1/dossiers?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 100);
}
