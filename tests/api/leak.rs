//! For every caller and every marker word: hits, total, facets and snippets agree exactly with
//! what that caller may read.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{TestApp, cf, spawn_app};

struct Doc {
    id: String,
    marker: String,
    dossier: String,
    office: &'static str,
    procedure: &'static str,
    applicant: u32,
    public: bool,
}

struct Caller {
    name: String,
    token: String,
    may_read: Box<dyn Fn(&Doc) -> bool>,
}

async fn check_caller(app: &TestApp, caller: &Caller, docs: &[Doc]) {
    let readable: Vec<&Doc> = docs.iter().filter(|d| (caller.may_read)(d)).collect();
    for doc in docs {
        let body: Value = app
            .search(&caller.token, &[("q", doc.marker.as_str())])
            .await
            .json()
            .await
            .unwrap();
        let visible = (caller.may_read)(doc);
        assert_eq!(
            body["total"],
            u64::from(visible),
            "{} searching {}: {body}",
            caller.name,
            doc.marker
        );
        let hits = body["hits"].as_array().unwrap();
        assert_eq!(hits.len(), usize::from(visible));
        if visible {
            assert_eq!(hits[0]["document_id"], doc.id.as_str());
            assert!(
                hits[0]["snippet"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("<mark>{}</mark>", doc.marker))
            );
        }
        for facet in ["procedure", "kind", "year", "status"] {
            let sum: u64 = body["facets"][facet]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(
                sum,
                u64::from(visible),
                "{} facet {facet} for {}",
                caller.name,
                doc.marker
            );
        }
    }
    // The common word: every readable document, with exact facets and no foreign marker.
    let body: Value = app
        .search(&caller.token, &[("q", "comunicazione"), ("limit", "100")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["total"],
        readable.len() as u64,
        "{}: {body}",
        caller.name
    );
    let got: BTreeSet<&str> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = readable.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(got, want, "{}", caller.name);
    let mut by_procedure: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &readable {
        *by_procedure.entry(d.procedure).or_default() += 1;
    }
    let facet: BTreeMap<&str, u64> = body["facets"]["procedure"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(facet, by_procedure, "{} procedure facet", caller.name);
    let foreign: Vec<&str> = docs
        .iter()
        .filter(|d| !(caller.may_read)(d))
        .map(|d| d.marker.as_str())
        .collect();
    for hit in body["hits"].as_array().unwrap() {
        let snippet = hit["snippet"].as_str().unwrap();
        for marker in &foreign {
            assert!(
                !snippet.contains(marker),
                "{} saw {marker} in a snippet",
                caller.name
            );
        }
    }
    // An empty query (browse) obeys the same rule.
    let browse: Value = app
        .search(&caller.token, &[("limit", "100")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        browse["total"],
        readable.len() as u64,
        "{} browsing",
        caller.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_only_what_each_caller_may_read() {
    let app = spawn_app().await;
    let staff_edilizia = app.staff(&["edilizia"]).await;
    let staff_tributi = app.staff(&["tributi"]).await;
    let plan: [(u32, &str, &str); 6] = [
        (90, "cila", "edilizia"),
        (90, "rimborso-imu", "tributi"),
        (91, "scia-edilizia", "edilizia"),
        (92, "riduzione-tari", "tributi"),
        (92, "permesso-di-costruire", "edilizia"),
        (93, "agibilita", "edilizia"),
    ];
    let mut docs = Vec::new();
    let mut citizens = BTreeMap::new();
    for n in [90u32, 91, 92, 93] {
        citizens.insert(n, app.citizen(n).await);
    }
    for (i, (applicant, procedure, office)) in plan.iter().enumerate() {
        let dossier = app
            .open_dossier(&citizens[applicant], procedure, &cf(*applicant))
            .await;
        let dossier_id = dossier["id"].as_str().unwrap().to_owned();
        let staff = if *office == "edilizia" {
            &staff_edilizia
        } else {
            &staff_tributi
        };
        for (j, visibility) in ["public", "internal"].iter().enumerate() {
            let marker = format!("leakmark{i}q{j}");
            let uploader = if *visibility == "public" {
                &citizens[applicant]
            } else {
                staff
            };
            let doc = app
                .add_text(
                    uploader,
                    &dossier_id,
                    &format!("comunicazione {marker}"),
                    "Atto",
                    visibility,
                )
                .await;
            docs.push(Doc {
                id: doc["id"].as_str().unwrap().to_owned(),
                marker,
                dossier: dossier_id.clone(),
                office,
                procedure,
                applicant: *applicant,
                public: *visibility == "public",
            });
        }
    }
    // A professional with their own dossier and a delegation on citizen 91's.
    let professional = app.user("professional", Some(&cf(94)), &[]).await;
    let own = app.open_dossier(&professional, "cila", &cf(94)).await;
    let own_id = own["id"].as_str().unwrap().to_owned();
    let own_doc = app
        .add_text(
            &professional,
            &own_id,
            "comunicazione leakmarkpro",
            "Atto",
            "public",
        )
        .await;
    docs.push(Doc {
        id: own_doc["id"].as_str().unwrap().to_owned(),
        marker: "leakmarkpro".into(),
        dossier: own_id,
        office: "edilizia",
        procedure: "cila",
        applicant: 94,
        public: true,
    });
    let delegated = docs
        .iter()
        .find(|d| d.applicant == 91)
        .unwrap()
        .dossier
        .clone();
    sqlx::query("insert into delegation (dossier_id, professional_cf, granted_by, created_at) select id, $1, created_by, 0 from dossier where id = $2")
        .bind(cf(94))
        .bind(&delegated)
        .execute(app.services.db.pool())
        .await
        .unwrap();
    app.indexed().await;

    let mut callers = vec![
        Caller {
            name: "staff edilizia".into(),
            token: staff_edilizia.clone(),
            may_read: Box::new(|d: &Doc| d.office == "edilizia"),
        },
        Caller {
            name: "staff tributi".into(),
            token: staff_tributi.clone(),
            may_read: Box::new(|d: &Doc| d.office == "tributi"),
        },
        Caller {
            name: "auditor".into(),
            token: app.user("auditor", None, &[]).await,
            may_read: Box::new(|_: &Doc| true),
        },
        Caller {
            name: "admin".into(),
            token: app.user("admin", None, &[]).await,
            may_read: Box::new(|_: &Doc| false),
        },
    ];
    for (n, token) in &citizens {
        let n = *n;
        callers.push(Caller {
            name: format!("citizen {n}"),
            token: token.clone(),
            may_read: Box::new(move |d: &Doc| d.applicant == n && d.public),
        });
    }
    let delegated_for_check = delegated.clone();
    callers.push(Caller {
        name: "professional".into(),
        token: professional.clone(),
        may_read: Box::new(move |d: &Doc| {
            (d.applicant == 94 || d.dossier == delegated_for_check) && d.public
        }),
    });
    for caller in &callers {
        check_caller(&app, caller, &docs).await;
    }

    // Revoking the delegation takes effect on the next search, with no reindex.
    let r = app
        .client
        .delete(app.url(&format!("/v1/dossiers/{delegated}/delegations/{}", cf(94))))
        .bearer_auth(&citizens[&91])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = Caller {
        name: "professional after revocation".into(),
        token: professional,
        may_read: Box::new(|d: &Doc| d.applicant == 94 && d.public),
    };
    check_caller(&app, &after, &docs).await;
}
