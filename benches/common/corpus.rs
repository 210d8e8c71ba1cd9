//! A deterministic corpus of a municipality's dossiers and documents, for the benchmarks.
//!
//! The same seed and size always give the same corpus, byte for byte. Dossiers are spread
//! over the procedure catalogue (`schema/procedures.json`) with a skewed popularity; each has
//! an applicant from a population of citizens, one to a dozen documents of the kinds a desk
//! receives, and for a third of them a delegated professional (a few busy studios hold most
//! delegations). Texts are Italian administrative prose of about 2 KB: a vocabulary of real
//! words followed by a long tail of Italian-shaped rare words, drawn with a Zipf-Mandelbrot
//! distribution, interleaved with function words, names, addresses, codici fiscali, cadastral
//! references and dossier numbers. Any document can also be rendered as a real multi-page PDF.
//!
//! Documents are generated on demand from `(seed, index)`, so a million of them never sit in
//! memory at once.

#![allow(dead_code)]

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Real words of the desk's vocabulary, most frequent first.
const WORDS: &str = "comune pratica domanda richiedente ufficio tecnico permesso costruire \
edilizia residenza intervento immobile documentazione istanza progetto relazione allegato \
dichiarazione autorizzazione procedimento termine giorni lavori protocollo responsabile \
certificato segnalazione attività parere versamento ricevuta planimetria catasto foglio \
mappale particella proprietà richiesta presentazione modulo firma digitale pagamento diritti \
segreteria istruttoria verifica controllo conformità urbanistica vigente piano regolatore \
normativa regolamento articolo comma legge decreto regionale nazionale provvedimento \
conclusivo accoglimento diniego integrazione sospensione comunicazione notifica avviso \
scadenza rinnovo concessione licenza commercio esercizio vicinato somministrazione alimenti \
bevande occupazione suolo pubblico cantiere sicurezza impresa esecutrice direttore progettista \
geometra architetto ingegnere studio asseverazione asseverata sostitutiva atto notorio \
anagrafe cambio abitazione famiglia componenti stato civile matrimonio nascita cittadinanza \
tributi imposta tassa rifiuti rimborso accertamento ravvedimento riduzione esenzione \
agevolazione contributo sociale assistenza domiciliare disabilità anziani minori scuola mensa \
trasporto iscrizione retta tariffa isee reddito nucleo ambiente albero abbattimento scarico \
acque reflue emissioni rumore impianto fotovoltaico caldaia manutenzione straordinaria \
ordinaria ristrutturazione demolizione ricostruzione ampliamento sopraelevazione recinzione \
facciata copertura tetto finestre serramenti agibilità abitabilità collaudo strutturale sismica \
deposito calcoli cemento armato paesaggistica vincolo soprintendenza beni culturali commissione \
seduta verbale riunione convocazione conferenza servizi ente gestore parcheggio passo carrabile \
segnaletica viabilità strada marciapiede illuminazione fognatura acquedotto allacciamento rete \
gas elettricità contatore voltura polizia locale verbale sanzione ricorso giudice pace prefetto \
tribunale amministrativo pagamento rateizzazione cartella sollecito interessi mora accesso atti \
copia conforme originale archivio fascicolo elettronico sportello unico telematico portale \
credenziali identità spid delega procura speciale professionista incarico cliente committente \
proprietario affittuario inquilino condominio amministratore assemblea millesimi spese \
preventivo fattura quietanza bonifico bollo marca euro importo saldo acconto cauzione \
fideiussione garanzia polizza assicurazione responsabilità civile danni sinistro perizia \
sopralluogo rilievo fotografico misure superficie volume altezza distanza confine vicino \
servitù passaggio accordo consenso nulla osta silenzio assenso diffida ripristino abuso \
sanatoria condono oblazione oneri urbanizzazione costo costruzione monetizzazione standard \
verde area lotto zona agricola residenziale produttiva artigianale industriale commerciale \
turistica ricettiva struttura alberghiera affittacamere locazione breve manifestazione evento \
spettacolo fiera mercato ambulante posteggio graduatoria bando avviso pubblico selezione \
punteggio requisiti esclusione ammissione esito favorevole sfavorevole motivazione osservazioni \
controdeduzioni partecipazione preavviso rigetto annullamento revoca autotutela decadenza";

/// Function words: frequent, dropped by the analyzer's stop list, there to make prose.
const FUNCTION_WORDS: &[&str] = &[
    "di", "il", "la", "per", "del", "della", "in", "e", "con", "che", "al", "alla", "dei", "delle",
    "a", "da", "nel", "nella", "sul", "sulla", "ai", "agli", "un", "una", "lo", "gli", "le", "si",
    "come", "ove", "nonché", "ovvero", "presso",
];

const FIRST_NAMES: &[&str] = &[
    "Mario",
    "Giuseppe",
    "Giovanni",
    "Luigi",
    "Francesco",
    "Antonio",
    "Paolo",
    "Marco",
    "Andrea",
    "Luca",
    "Stefano",
    "Alessandro",
    "Roberto",
    "Davide",
    "Matteo",
    "Simone",
    "Federico",
    "Lorenzo",
    "Maria",
    "Anna",
    "Giulia",
    "Francesca",
    "Chiara",
    "Sara",
    "Laura",
    "Elena",
    "Paola",
    "Silvia",
    "Valentina",
    "Alessandra",
    "Martina",
    "Federica",
    "Elisa",
    "Roberta",
    "Cristina",
    "Giorgia",
];

const SURNAMES: &[&str] = &[
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Romano",
    "Colombo",
    "Ricci",
    "Marino",
    "Greco",
    "Bruno",
    "Gallo",
    "Conti",
    "De Luca",
    "Mancini",
    "Costa",
    "Giordano",
    "Rizzo",
    "Lombardi",
    "Moretti",
    "Barbieri",
    "Fontana",
    "Santoro",
    "Mariani",
    "Rinaldi",
    "Caruso",
    "Ferrara",
    "Galli",
    "Martini",
    "Leone",
    "Longo",
    "Gentile",
    "Martinelli",
    "Vitale",
    "Lombardo",
    "Serra",
    "Coppola",
    "De Santis",
    "D'Angelo",
    "Marchetti",
    "Parisi",
    "Villa",
    "Conte",
    "Ferraro",
    "Ferri",
    "Fabbri",
    "Bianco",
    "Marini",
    "Grasso",
    "Valentini",
    "Messina",
    "Sala",
    "De Angelis",
    "Gatti",
    "Pellegrini",
    "Palumbo",
    "Sanna",
    "Farina",
    "Rizzi",
    "Monti",
    "Cattaneo",
    "Morelli",
    "Amato",
    "Silvestri",
    "Mazza",
    "Testa",
    "Grassi",
    "Pellegrino",
    "Carbone",
    "Giuliani",
    "Benedetti",
    "Barone",
    "Rossetti",
    "Caputo",
    "Montanari",
    "Guerra",
    "Palmieri",
    "Bernardi",
    "Martino",
    "Fiore",
    "De Rosa",
    "Ferretti",
    "Bellini",
    "Basile",
    "Riva",
    "Donati",
    "Piras",
    "Vitali",
    "Battaglia",
    "Sartori",
    "Neri",
    "Costantini",
    "Milani",
    "Pagano",
    "Ruggiero",
    "Sorrentino",
    "D'Amico",
    "Orlando",
    "Damico",
    "Negri",
    "Bertolino",
    "Gribaudo",
    "Chiadò",
];

const STREETS: &[&str] = &[
    "via Roma",
    "via Torino",
    "corso Martiri della Libertà",
    "via Vittorio Emanuele II",
    "piazza del Popolo",
    "via Garibaldi",
    "via Cavour",
    "via Mazzini",
    "via San Giovanni Bosco",
    "via Lanzo",
    "via Robassomero",
    "strada San Maurizio",
    "via Devesi",
    "via Matteotti",
    "piazza Castello",
    "via Battitore",
    "via Costa",
    "via Sansoldi",
    "via Fiume",
    "via Trento",
    "via Trieste",
    "via Gramsci",
    "via Don Minzoni",
    "via Italia",
    "largo Europa",
];

const PLACES: &[&str] = &[
    ("Ciriè"),
    "Torino",
    "San Maurizio Canavese",
    "Nole",
    "San Carlo Canavese",
    "Robassomero",
    "Lanzo Torinese",
    "Caselle Torinese",
    "Venaria Reale",
    "Mathi",
    "Villanova Canavese",
    "Grosso",
    "Fiano",
    "Borgaro Torinese",
    "Leinì",
    "Volpiano",
    "Chivasso",
    "Ivrea",
    "Pinerolo",
    "Moncalieri",
    "Rivoli",
    "Collegno",
    "Settimo Torinese",
    "Chieri",
    "Carmagnola",
];

/// Cadastral codes of the places above' municipalities, for codici fiscali.
const BIRTH_CODES: &[&str] = &[
    "C722", "L219", "I030", "F925", "H820", "H547", "E430", "B955",
];

/// Set phrases of the desk's prose; they make phrase queries meaningful.
pub const PHRASES: &[&str] = &[
    "permesso di costruire",
    "parere favorevole",
    "segnalazione certificata di inizio attività",
    "dichiarazione sostitutiva di atto notorio",
    "responsabile del procedimento",
    "conferenza dei servizi",
    "certificato di agibilità",
    "occupazione di suolo pubblico",
    "manutenzione straordinaria",
    "oneri di urbanizzazione",
    "silenzio assenso",
    "preavviso di rigetto",
    "accesso agli atti",
    "cambio di residenza",
    "passo carrabile",
];

/// Which fraction of dossiers have a delegated professional.
const DELEGATED_SHARE: f64 = 0.35;
/// Words per document, before headers.
const WORDS_PER_DOCUMENT: std::ops::RangeInclusive<usize> = 200..=320;

/// A procedure of the catalogue.
#[derive(Clone, Debug)]
pub struct Procedure {
    /// Code.
    pub code: String,
    /// Office code.
    pub office: String,
    /// Display name.
    pub name: String,
}

/// A dossier of the corpus.
#[derive(Clone, Debug)]
pub struct Dossier {
    /// Position in the corpus.
    pub index: usize,
    /// Year it was opened.
    pub year: i32,
    /// Number within the year.
    pub seq: i64,
    /// Procedure (index into [`Corpus::procedures`]).
    pub procedure: usize,
    /// The applicant: citizen number (see [`codice_fiscale`]).
    pub applicant: u32,
    /// Subject line.
    pub subject: String,
    /// Status.
    pub status: &'static str,
    /// Online or at the desk.
    pub channel: &'static str,
    /// When it was opened, ms since the epoch.
    pub created_ms: i64,
    /// Delegated professionals (professional numbers) and whether each delegation is active.
    pub delegates: Vec<(u32, Delegation)>,
    /// Its documents (indexes).
    pub documents: std::ops::Range<usize>,
}

/// The state of a delegation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delegation {
    /// In force.
    Active,
    /// Revoked by the applicant.
    Revoked,
    /// Lapsed at its end date.
    Expired,
}

/// A document of the corpus.
#[derive(Clone, Debug)]
pub struct Document {
    /// Position in the corpus.
    pub index: usize,
    /// Its dossier (index).
    pub dossier: usize,
    /// Title.
    pub title: String,
    /// Kind.
    pub kind: &'static str,
    /// `public` or `internal`.
    pub visibility: &'static str,
    /// When it was filed, ms since the epoch.
    pub created_ms: i64,
    /// Its text.
    pub text: String,
}

/// The corpus: its dossiers in memory (small), its documents on demand.
pub struct Corpus {
    seed: u64,
    /// The catalogue's procedures.
    pub procedures: Vec<Procedure>,
    /// All dossiers.
    pub dossiers: Vec<Dossier>,
    /// Number of documents.
    pub documents: usize,
    /// Size of the citizen population applicants are drawn from.
    pub citizens: u32,
    /// Number of professionals.
    pub professionals: u32,
    /// The whole vocabulary, most frequent first.
    pub vocabulary: Vec<String>,
    words: WeightedIndex<f64>,
    dossier_of: Vec<u32>,
}

impl Corpus {
    /// The corpus of `documents` documents for `seed`, over the catalogue in `catalogue_json`.
    pub fn new(seed: u64, documents: usize, catalogue_json: &str) -> Self {
        let procedures = parse_catalogue(catalogue_json);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vocabulary = vocabulary(&mut rng);
        // Zipf-Mandelbrot over ranks: f(r) ∝ 1 / (r + 2.7)^1.07.
        let words =
            WeightedIndex::new((0..vocabulary.len()).map(|r| 1.0 / (r as f64 + 2.7).powf(1.07)))
                .expect("weights");
        // Procedures: a few are most of the desk's work.
        let procedure_pick =
            WeightedIndex::new((0..procedures.len()).map(|r| 1.0 / (r as f64 + 1.5)))
                .expect("weights");
        let mut dossiers = Vec::new();
        let mut dossier_of = Vec::with_capacity(documents);
        let mut next = 0usize;
        let citizens = ((documents / 8).max(50)) as u32;
        let professionals = ((documents / 500).max(20)) as u32;
        // Some studios are much busier than others, none holds a large share of the town.
        let professional_pick =
            WeightedIndex::new((0..professionals).map(|r| 1.0 / (f64::from(r) + 20.0)))
                .expect("weights");
        let mut seq_by_year = std::collections::BTreeMap::<i32, i64>::new();
        while next < documents {
            // One to twelve documents, most dossiers small.
            let n = (1 + rng.random_range(0..4) + rng.random_range(0..4) + rng.random_range(0..5))
                .min(documents - next);
            let index = dossiers.len();
            let year = 2019 + (next * 8 / documents.max(1)).min(7) as i32;
            let seq = seq_by_year.entry(year).or_default();
            *seq += 1;
            let procedure = procedure_pick.sample(&mut rng);
            let status = match rng.random_range(0..100) {
                0..10 => "submitted",
                10..45 => "started",
                45..55 => "awaiting_integration",
                55..88 => "concluded",
                88..91 => "withdrawn",
                _ => "archived",
            };
            let mut delegates = Vec::new();
            if rng.random_bool(DELEGATED_SHARE) {
                let state = match rng.random_range(0..20) {
                    0 => Delegation::Revoked,
                    1 => Delegation::Expired,
                    _ => Delegation::Active,
                };
                delegates.push((professional_pick.sample(&mut rng) as u32, state));
            }
            let created_ms = year_start_ms(year) + rng.random_range(0..360) * 86_400_000;
            dossiers.push(Dossier {
                index,
                year,
                seq: *seq,
                procedure,
                applicant: rng.random_range(0..citizens),
                subject: String::new(),
                status,
                channel: if rng.random_bool(0.8) {
                    "online"
                } else {
                    "desk"
                },
                created_ms,
                delegates,
                documents: next..next + n,
            });
            dossier_of.extend(std::iter::repeat_n(index as u32, n));
            next += n;
        }
        let mut corpus = Self {
            seed,
            procedures,
            dossiers,
            documents,
            citizens,
            professionals,
            vocabulary,
            words,
            dossier_of,
        };
        for i in 0..corpus.dossiers.len() {
            let mut rng = corpus.rng(u64::MAX - i as u64);
            let p = &corpus.procedures[corpus.dossiers[i].procedure];
            let subject = format!(
                "{} - {} {}",
                p.name,
                STREETS[rng.random_range(0..STREETS.len())],
                rng.random_range(1..120)
            );
            corpus.dossiers[i].subject = subject;
        }
        corpus
    }

    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// The dossier number as the server writes it, `YYYY/NNNNNN`.
    pub fn number(&self, dossier: usize) -> String {
        let d = &self.dossiers[dossier];
        format!("{}/{:06}", d.year, d.seq)
    }

    /// The dossier a document belongs to.
    pub fn dossier_of(&self, document: usize) -> usize {
        self.dossier_of[document] as usize
    }

    /// Document `index`, generated.
    pub fn document(&self, index: usize) -> Document {
        let dossier = &self.dossiers[self.dossier_of(index)];
        let mut rng = self.rng(index as u64);
        let position = index - dossier.documents.start;
        let (kind, title) = if position == 0 {
            ("application", "Istanza".to_owned())
        } else {
            match rng.random_range(0..100) {
                0..30 => ("attachment", "Allegato".to_owned()),
                30..45 => ("plan", "Planimetria".to_owned()),
                45..58 => ("receipt", "Ricevuta di pagamento".to_owned()),
                58..64 => ("identity_document", "Documento di identità".to_owned()),
                64..78 => ("correspondence", "Comunicazione".to_owned()),
                78..88 => ("opinion", "Parere".to_owned()),
                88..94 => ("decision", "Provvedimento".to_owned()),
                _ => ("other", "Documento".to_owned()),
            }
        };
        // Opinions and a share of the correspondence stay inside the office.
        let internal = match kind {
            "opinion" => rng.random_bool(0.7),
            "correspondence" | "other" => rng.random_bool(0.3),
            _ => rng.random_bool(0.05),
        };
        let title = format!(
            "{title} {} - pratica {}",
            self.word(&mut rng),
            self.number(dossier.index)
        );
        let text = self.text(&mut rng, dossier);
        Document {
            index,
            dossier: dossier.index,
            title,
            kind,
            visibility: if internal { "internal" } else { "public" },
            created_ms: dossier.created_ms + position as i64 * 3_600_000,
            text,
        }
    }

    fn word(&self, rng: &mut ChaCha8Rng) -> &str {
        &self.vocabulary[self.words.sample(rng)]
    }

    fn text(&self, rng: &mut ChaCha8Rng, dossier: &Dossier) -> String {
        let mut out = String::with_capacity(2600);
        let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last = SURNAMES[rng.random_range(0..SURNAMES.len())];
        let procedure = &self.procedures[dossier.procedure];
        out.push_str(&format!(
            "Comune di Ciriè. {}. Pratica n. {} del {}. Il sottoscritto {first} {last}, nato a {} \
             il {:02}/{:02}/{}, codice fiscale {}, residente in {} {}, {} ",
            procedure.name,
            self.number(dossier.index),
            dossier.year,
            PLACES[rng.random_range(0..PLACES.len())],
            rng.random_range(1..29),
            rng.random_range(1..13),
            rng.random_range(1940..2004),
            codice_fiscale(dossier.applicant),
            STREETS[rng.random_range(0..STREETS.len())],
            rng.random_range(1..150),
            PLACES[rng.random_range(0..PLACES.len())],
        ));
        let words = rng.random_range(WORDS_PER_DOCUMENT);
        let mut sentence = 0;
        for i in 0..words {
            if i % 3 == 1 {
                out.push_str(FUNCTION_WORDS[rng.random_range(0..FUNCTION_WORDS.len())]);
            } else {
                out.push_str(self.word(rng));
            }
            sentence += 1;
            if sentence > 12 && rng.random_bool(0.12) {
                sentence = 0;
                match rng.random_range(0..10) {
                    0 => out.push_str(&format!(
                        ", immobile censito al catasto al foglio {} mappale {} subalterno {}",
                        rng.random_range(1..60),
                        rng.random_range(1..900),
                        rng.random_range(1..30)
                    )),
                    1 => out.push_str(&format!(
                        ", protocollo n. {} del {:02}/{:02}/{}",
                        rng.random_range(1000..99_999),
                        rng.random_range(1..29),
                        rng.random_range(1..13),
                        dossier.year
                    )),
                    2..5 => {
                        out.push_str(", ");
                        out.push_str(PHRASES[rng.random_range(0..PHRASES.len())]);
                    }
                    5 => out.push_str(&format!(
                        ", importo di euro {},{:02}",
                        rng.random_range(16..5000),
                        rng.random_range(0..100)
                    )),
                    _ => {}
                }
                out.push_str(". ");
            } else {
                out.push(' ');
            }
        }
        out.push_str(&format!(
            ". Il responsabile del procedimento {} {}.",
            FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
            SURNAMES[rng.random_range(0..SURNAMES.len())]
        ));
        out
    }

    /// Every citizen who applied for something, with the number of their dossiers.
    pub fn applicants(&self) -> std::collections::BTreeMap<u32, usize> {
        let mut out = std::collections::BTreeMap::new();
        for d in &self.dossiers {
            *out.entry(d.applicant).or_default() += 1;
        }
        out
    }

    /// Active delegations per professional.
    pub fn delegations_per_professional(&self) -> std::collections::BTreeMap<u32, usize> {
        let mut out = std::collections::BTreeMap::new();
        for d in &self.dossiers {
            for (p, state) in &d.delegates {
                if *state == Delegation::Active {
                    *out.entry(*p).or_default() += 1;
                }
            }
        }
        out
    }
}

fn year_start_ms(year: i32) -> i64 {
    // Days from 1970-01-01 to January 1st of `year` (years 1970..2100).
    let days: i64 = (1970..year)
        .map(|y| if y % 4 == 0 { 366 } else { 365 })
        .sum();
    days * 86_400_000
}

fn parse_catalogue(json: &str) -> Vec<Procedure> {
    let value: serde_json::Value = serde_json::from_str(json).expect("catalogue JSON");
    value["procedures"]
        .as_array()
        .expect("procedures")
        .iter()
        .map(|p| Procedure {
            code: p["code"].as_str().expect("code").to_owned(),
            office: p["office"].as_str().expect("office").to_owned(),
            name: p["name"].as_str().expect("name").to_owned(),
        })
        .collect()
}

/// The vocabulary: the real words, then a long tail of rare Italian-shaped words (technical
/// terms, place and family names as they occur in attachments), 40 000 in all.
fn vocabulary(rng: &mut ChaCha8Rng) -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr", "dr",
        "fr", "gr", "pr", "tr", "st", "sp", "sc", "ch", "gl", "gn", "pl", "cl",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ia", "io"];
    const ENDINGS: &[&str] = &[
        "ato", "ata", "ione", "ezza", "ento", "ante", "ale", "ino", "ello", "etta", "ese", "ile",
        "ore", "ura", "ismo", "ista", "ivo", "oso",
    ];
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for w in WORDS.split_whitespace() {
        if seen.insert(w.to_owned()) {
            out.push(w.to_owned());
        }
    }
    while out.len() < 40_000 {
        let syllables = rng.random_range(1..4);
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[rng.random_range(0..ONSETS.len())]);
            w.push_str(VOWELS[rng.random_range(0..VOWELS.len())]);
        }
        w.push_str(ONSETS[rng.random_range(0..ONSETS.len())]);
        w.push_str(ENDINGS[rng.random_range(0..ENDINGS.len())]);
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// A valid codice fiscale for citizen or professional number `n` (professionals are numbered
/// from 10 000 000 so the two never meet).
pub fn codice_fiscale(n: u32) -> String {
    const CONSONANTS: &[u8] = b"BCDFGHLMNPRSTVZ";
    const MONTHS: &[u8] = b"ABCDEHLMPRST";
    let mut code = String::with_capacity(16);
    let mut k = n;
    for _ in 0..6 {
        code.push(CONSONANTS[(k % CONSONANTS.len() as u32) as usize] as char);
        k /= CONSONANTS.len() as u32;
    }
    let h = n.wrapping_mul(2_654_435_761);
    code.push_str(&format!("{:02}", 40 + h % 60));
    code.push(MONTHS[((h >> 8) % 12) as usize] as char);
    let day = 1 + (h >> 12) % 28 + if (h >> 20).is_multiple_of(2) { 0 } else { 40 };
    code.push_str(&format!("{day:02}"));
    code.push_str(BIRTH_CODES[((h >> 24) as usize) % BIRTH_CODES.len()]);
    code.push(check_character(&code));
    code
}

/// The codice fiscale of professional number `n`.
pub fn professional_cf(n: u32) -> String {
    codice_fiscale(10_000_000 + n)
}

fn check_character(first15: &str) -> char {
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let sum: u32 = first15
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let v = c.to_digit(10).unwrap_or_else(|| c as u32 - 'A' as u32);
            if i % 2 == 0 { ODD[v as usize] } else { v }
        })
        .sum();
    (b'A' + (sum % 26) as u8) as char
}

/// Renders `text` as a real PDF of `pages` A4 pages (Helvetica, WinAnsi), the text flowed
/// into lines of about 90 characters and split evenly over the pages.
pub fn pdf(text: &str, pages: usize) -> Vec<u8> {
    let pages = pages.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if line.len() + word.len() > 90 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let per_page = lines.len().div_ceil(pages).max(1);
    let mut bodies: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        Vec::new(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ];
    let mut kids = String::new();
    for p in 0..pages {
        let mut content = b"BT /F1 10 Tf 50 780 Td 12 TL\n".to_vec();
        for l in lines.iter().skip(p * per_page).take(per_page) {
            content.push(b'(');
            for c in l.chars() {
                match c {
                    '(' | ')' | '\\' => {
                        content.push(b'\\');
                        content.push(c as u8);
                    }
                    // WinAnsi is Latin-1 for the accented letters Italian uses.
                    c if (c as u32) < 256 => content.push(c as u32 as u8),
                    _ => content.push(b'?'),
                }
            }
            content.extend_from_slice(b") '\n");
        }
        content.extend_from_slice(b"ET");
        let mut body = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        body.extend_from_slice(&content);
        body.extend_from_slice(b"\nendstream");
        bodies.push(body);
        let content_id = bodies.len();
        bodies.push(
            format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {content_id} 0 R /Resources << /Font << /F1 3 0 R >> >> >>")
                .into_bytes(),
        );
        kids.push_str(&format!("{} 0 R ", bodies.len()));
    }
    bodies[1] = format!("<< /Type /Pages /Kids [{kids}] /Count {pages} >>").into_bytes();
    pdf_of(&bodies)
}

/// A PDF from numbered object bodies (object i+1 = bodies[i]) with a correct xref table.
pub fn pdf_of(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", bodies.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            bodies.len() + 1
        )
        .as_bytes(),
    );
    out
}
