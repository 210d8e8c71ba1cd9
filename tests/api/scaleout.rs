//! Several nodes over one database and one blob store, each with its own index following the
//! change log.

use std::time::Duration;

use crate::helpers::{cf, spawn_app, spawn_node_like};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_uploaded_through_either_node_is_found_through_both() {
    let a = spawn_app().await;
    let b = spawn_node_like(&a).await;
    let citizen = a.citizen(700).await;
    let dossier = a.open_dossier(&citizen, "cila", &cf(700)).await;
    let d = dossier["id"].as_str().unwrap();

    let via_a = a
        .add_text(
            &citizen,
            d,
            "verbale arrivato dal nodo alfa",
            "Alfa",
            "public",
        )
        .await;
    let via_b = b
        .add_text(
            &citizen,
            d,
            "verbale arrivato dal nodo beta",
            "Beta",
            "public",
        )
        .await;
    for (node, name) in [(&a, "a"), (&b, "b")] {
        for (word, doc) in [("alfa", &via_a), ("beta", &via_b)] {
            let (found, took) = node
                .search_until(&citizen, &[("q", word)], 1, Duration::from_secs(2))
                .await;
            assert_eq!(
                found["total"], 1,
                "node {name} did not find {word} within 2 s: {found}"
            );
            assert_eq!(found["hits"][0]["document_id"], doc["id"]);
            assert!(
                took <= Duration::from_secs(2),
                "node {name}, {word}: {took:?}"
            );
        }
    }

    // A node started empty catches up by itself.
    let c = spawn_node_like(&a).await;
    let (found, _) = c
        .search_until(&citizen, &[("q", "verbale")], 2, Duration::from_secs(20))
        .await;
    assert_eq!(found["total"], 2, "{found}");
    assert_eq!(c.services.index.as_ref().unwrap().num_docs(), 2);
}
