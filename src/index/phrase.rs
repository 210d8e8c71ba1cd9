//! Exact phrases of frequent words, matched by walking the words' postings block by block.
//!
//! tantivy's phrase scorer finds where a candidate document's positions start by summing the
//! term frequencies of the block's documents before it, for every word of every candidate. On
//! a phrase of words found in most documents every document of a block is a candidate, so the
//! block is summed over and over: a profile of one such phrase put 41 % of the search in that
//! sum. Here each word keeps a running position offset as it moves through its postings, so a
//! document's positions are found at once, and its positions are read in increasing order.
//!
//! Keeping that offset means decoding every block of every word instead of jumping over the
//! ones no match can be in, so it is done only where every word is frequent in the segment
//! next to the others (see [`DENSE_RATIO`]); elsewhere tantivy's scorer runs. When another
//! clause leads the search (a permission admitting few documents) and the walk finds itself
//! decoding blocks it has no use for, it hands the rest of the segment over to tantivy's
//! scorer. Both match the same documents with the same scores: the phrase's BM25 weight over
//! the number of times it occurs in the document, as tantivy computes it.
//!
//! A search over an office or the whole tenant walks a segment's whole the first time it meets
//! a phrase there and keeps the matches (see [`super::cache::PhraseMatches`]); later searches,
//! whoever makes them, read those like a word's postings.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tantivy::directory::CompositeFile;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::index::{SegmentComponent, SegmentReader};
use tantivy::positions::PositionReader;
use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{
    Bm25Weight, BooleanQuery, EmptyScorer, EnableScoring, Explanation, PhraseQuery, Query, Scorer,
    Weight,
};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, IndexRecordOption, Term};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocId, DocSet, Score, SeekDangerResult, TERMINATED};

use super::cache::{MATCH_BLOCK, PhraseMatches, SegmentCaches};
use super::filter::prune_scorer;

/// A segment's words are walked here when the most frequent is in at most this many times as
/// many documents as the rarest: then a match is likely in most blocks of every word, and
/// decoding them all costs little more than jumping to them.
const DENSE_RATIO: u32 = 16;

/// An exact phrase (no slop) of at least two words at known positions.
#[derive(Clone, Debug)]
pub struct FrequentPhrase {
    /// The same phrase for tantivy: segments where it is not dense, and explanations.
    phrase: PhraseQuery,
    field: Field,
    /// Each word with its position in the phrase.
    terms: Vec<(usize, Term)>,
    /// Where its matches are kept per segment, if anywhere, and whether this search may walk
    /// a segment's whole to keep them.
    kept: Option<(Arc<SegmentCaches>, bool)>,
}

impl FrequentPhrase {
    /// The phrase of `terms`, each at its position (stop words leave gaps), all in one field.
    ///
    /// # Panics
    /// With fewer than two terms, or terms of different fields (as [`PhraseQuery`]).
    pub fn new(terms: Vec<(usize, Term)>) -> Self {
        let phrase = PhraseQuery::new_with_offset(terms.clone());
        Self {
            field: phrase.field(),
            phrase,
            terms,
            kept: None,
        }
    }

    /// The phrase, read from the matches kept in `caches` where a segment's are (see
    /// [`PhraseMatches`]). Where they are not, a search that may `walk` walks the segment's whole
    /// and keeps them; another matches as it would without `caches` (a search over a few
    /// dossiers' documents asks the phrase about those alone).
    pub fn kept_in(mut self, caches: Arc<SegmentCaches>, walk: bool) -> Self {
        self.kept = Some((caches, walk));
        self
    }

    /// Whether its searches walk segments to keep its matches, so that its best matches can
    /// be ranked from them skipping what cannot reach the page.
    pub fn keeps(&self) -> bool {
        matches!(self.kept, Some((_, true)))
    }

    /// What names the phrase's matches in a segment's kept ones: its words and where they
    /// stand.
    fn key(&self) -> [u8; 32] {
        Sha256::digest(format!("{:?}", self.terms).as_bytes()).into()
    }

    /// The phrase as tantivy's query.
    pub fn phrase(&self) -> &PhraseQuery {
        &self.phrase
    }

    fn phrase_weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<FrequentPhraseWeight> {
        let fallback = self.phrase.weight(scoring)?;
        let bm25 = match scoring {
            EnableScoring::Enabled {
                statistics_provider,
                ..
            } => {
                let terms: Vec<Term> = self.terms.iter().map(|(_, t)| t.clone()).collect();
                Some(Bm25Weight::for_terms(statistics_provider, &terms)?)
            }
            EnableScoring::Disabled { .. } => None,
        };
        let kept = self
            .kept
            .clone()
            .map(|(caches, walk)| (caches, self.key(), walk));
        Ok(FrequentPhraseWeight {
            fallback,
            field: self.field,
            terms: self.terms.clone(),
            scores: Arc::new(score_table(bm25.as_ref())),
            bm25,
            kept,
        })
    }
}

impl Query for FrequentPhrase {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.phrase_weight(scoring)?))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.phrase.query_terms(visitor);
    }
}

struct FrequentPhraseWeight {
    fallback: Box<dyn Weight>,
    field: Field,
    terms: Vec<(usize, Term)>,
    bm25: Option<Bm25Weight>,
    /// `bm25`'s scores tabled once for all segments (unboosted).
    scores: Arc<Vec<[Score; 256]>>,
    /// The caches the matches are kept in, the phrase's key there, and whether to walk a
    /// segment to keep them.
    kept: Option<(Arc<SegmentCaches>, [u8; 32], bool)>,
}

/// How a phrase is matched in one segment.
enum Plan {
    /// A word is not in the segment.
    Empty,
    /// Every word is frequent: walked.
    Walk(Box<DensePhraseScorer>),
    /// Left to tantivy's scorer.
    Tantivy,
}

impl FrequentPhraseWeight {
    /// How to match the phrase in `reader`.
    fn plan(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Plan> {
        let inverted = reader.inverted_index(self.field)?;
        let mut infos = Vec::with_capacity(self.terms.len());
        for (offset, term) in &self.terms {
            match inverted.get_term_info(term)? {
                Some(info) => infos.push((*offset, info)),
                None => return Ok(Plan::Empty),
            }
        }
        let rarest = infos.iter().map(|(_, i)| i.doc_freq).min().unwrap_or(0);
        let commonest = infos.iter().map(|(_, i)| i.doc_freq).max().unwrap_or(0);
        if commonest > rarest.saturating_mul(DENSE_RATIO) {
            return Ok(Plan::Tantivy);
        }
        let Some(positions) = CompositeFile::open(&reader.open_read(SegmentComponent::Positions)?)?
            .open_read(self.field)
        else {
            return Ok(Plan::Tantivy);
        };
        let last = infos.iter().map(|(o, _)| *o).max().unwrap_or(0);
        let mut words = Vec::with_capacity(infos.len());
        for (offset, info) in &infos {
            let postings =
                inverted.read_block_postings_from_terminfo(info, IndexRecordOption::WithFreqs)?;
            let bytes = positions.read_bytes_slice(info.positions_range.clone())?;
            words.push(Word {
                postings,
                positions: PositionReader::open(bytes)?,
                index: 0,
                block_offset: 0,
                in_block: 0,
                block_positions: Vec::new(),
                block_read: false,
                blocks: 1,
                shift: (last - offset) as u32,
                doc_freq: info.doc_freq,
            });
        }
        // The rarest word leads the search for documents holding them all.
        words.sort_by_key(|w| w.doc_freq);
        let mut scorer = DensePhraseScorer {
            words,
            scoring: self.scoring(reader, boost)?,
            doc: 0,
            count: 0,
            left: Vec::new(),
            marks: Vec::new(),
            checked: 0,
        };
        let first = scorer.words[0].doc();
        scorer.find(first);
        Ok(Plan::Walk(Box::new(scorer)))
    }

    /// The phrase's BM25 weight in `reader`, boosted.
    fn scoring(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<PhraseScoring> {
        let fieldnorms = match &self.bm25 {
            Some(_) => reader.get_fieldnorms_reader(self.field)?,
            None => FieldNormReader::constant(reader.max_doc(), 1),
        };
        let bm25 = self.bm25.as_ref().map(|w| w.boost_by(boost));
        Ok(PhraseScoring {
            scores: if boost == 1.0 {
                self.scores.clone()
            } else {
                Arc::new(score_table(bm25.as_ref()))
            },
            bm25,
            fieldnorms,
        })
    }

    /// Walks the whole segment once and keeps every match (see [`PhraseMatches`]), or reads
    /// what an earlier walk kept: the phrase is then answered as a word's postings would be.
    fn kept_scorer(
        &self,
        reader: &SegmentReader,
        boost: Score,
        caches: &SegmentCaches,
        key: &[u8; 32],
    ) -> tantivy::Result<Box<dyn Scorer>> {
        let segment = reader.segment_id();
        let matches = match caches.phrase(segment, key) {
            Some(matches) => matches,
            None => match self.plan(reader, boost)? {
                Plan::Empty => return Ok(Box::new(EmptyScorer)),
                Plan::Tantivy => return self.fallback.scorer(reader, boost),
                Plan::Walk(mut walk) => {
                    let mut matches = PhraseMatches::default();
                    while walk.doc != TERMINATED {
                        matches.docs.push(walk.doc);
                        matches.counts.push(walk.count);
                        walk.advance();
                    }
                    // Kept for as long as the segment lives: no spare capacity.
                    matches.docs.shrink_to_fit();
                    matches.counts.shrink_to_fit();
                    let norms = reader.get_fieldnorms_reader(self.field)?;
                    matches.bounds = (matches.docs.chunks(MATCH_BLOCK))
                        .zip(matches.counts.chunks(MATCH_BLOCK))
                        .map(|(docs, counts)| {
                            let most = counts.iter().copied().max().unwrap_or(0);
                            let shortest = docs.iter().map(|&d| norms.fieldnorm_id(d)).min();
                            (most, shortest.unwrap_or(0))
                        })
                        .collect();
                    let matches = Arc::new(matches);
                    caches.keep_phrase(segment, *key, matches.clone());
                    matches
                }
            },
        };
        self.read_kept(reader, boost, matches)
    }

    /// Reads `matches`, kept for `reader`, as a word's postings.
    fn read_kept(
        &self,
        reader: &SegmentReader,
        boost: Score,
        matches: Arc<PhraseMatches>,
    ) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(KeptPhraseScorer {
            matches,
            at: 0,
            scoring: self.scoring(reader, boost)?,
        }))
    }
}

impl Weight for FrequentPhraseWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        if let Some((caches, key, walk)) = &self.kept {
            if *walk {
                return self.kept_scorer(reader, boost, caches, key);
            }
            if let Some(matches) = caches.phrase(reader.segment_id(), key) {
                return self.read_kept(reader, boost, matches);
            }
        }
        Ok(match self.plan(reader, boost)? {
            Plan::Empty => Box::new(EmptyScorer),
            Plan::Walk(dense) => Box::new(AdaptivePhraseScorer {
                dense: *dense,
                tantivy: self.fallback.scorer(reader, boost)?,
                handed_over: false,
                fresh: false,
            }),
            Plan::Tantivy => self.fallback.scorer(reader, boost)?,
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.fallback.explain(reader, doc)
    }

    /// Over kept matches, a block of them whose best possible score (the most occurrences in
    /// the shortest field: BM25 grows with the one and falls with the other) cannot beat the
    /// page's worst is skipped unscored.
    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        let kept = match (&self.kept, &self.bm25) {
            (Some((caches, key, _)), Some(bm25)) => caches
                .phrase(reader.segment_id(), key)
                .map(|matches| (matches, bm25)),
            _ => None,
        };
        let Some((matches, bm25)) = kept else {
            prune_scorer(self.scorer(reader, 1.0)?.as_mut(), threshold, callback);
            return Ok(());
        };
        let mut bar = threshold;
        let scoring = self.scoring(reader, 1.0)?;
        for (block, &(most, shortest)) in matches.bounds.iter().enumerate() {
            if bm25.score(shortest, most) <= bar {
                continue;
            }
            let start = block * MATCH_BLOCK;
            let end = (start + MATCH_BLOCK).min(matches.docs.len());
            for (&doc, &count) in matches.docs[start..end]
                .iter()
                .zip(&matches.counts[start..end])
            {
                let score = scoring.score(doc, count);
                if score > bar {
                    bar = callback(doc, score);
                }
            }
        }
        Ok(())
    }
}

/// The BM25 weight of a phrase in one segment.
struct PhraseScoring {
    bm25: Option<Bm25Weight>,
    /// `bm25`'s scores of 1, 2… occurrences by field length.
    scores: Arc<Vec<[Score; 256]>>,
    fieldnorms: FieldNormReader,
}

impl PhraseScoring {
    /// The score of `doc`, which holds the phrase `count` times.
    fn score(&self, doc: DocId, count: u32) -> Score {
        let Some(bm25) = &self.bm25 else {
            return 1.0;
        };
        let fieldnorm = self.fieldnorms.fieldnorm_id(doc);
        match count
            .checked_sub(1)
            .and_then(|i| self.scores.get(i as usize))
        {
            Some(scores) => scores[fieldnorm as usize],
            None => bm25.score(fieldnorm, count),
        }
    }
}

/// A phrase's kept matches in one segment, read like a word's postings.
struct KeptPhraseScorer {
    matches: Arc<PhraseMatches>,
    at: usize,
    scoring: PhraseScoring,
}

impl DocSet for KeptPhraseScorer {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.matches.docs.len());
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let rest = self.matches.docs.get(self.at..).unwrap_or_default();
        self.at += rest.partition_point(|&d| d < target);
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.matches
            .docs
            .get(self.at)
            .copied()
            .unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        self.matches.docs.len() as u32
    }
}

impl Scorer for KeptPhraseScorer {
    fn score(&mut self) -> Score {
        let count = self.matches.counts.get(self.at).copied().unwrap_or(0);
        self.scoring.score(self.doc(), count)
    }
}

/// One word of the phrase in one segment, at a document of its postings.
struct Word {
    postings: BlockSegmentPostings,
    positions: PositionReader,
    /// The document's index in the loaded block.
    index: usize,
    /// Where the positions of the block's first document start: the frequencies of every
    /// document of the earlier blocks summed.
    block_offset: u64,
    /// Where the document's positions start within the block's.
    in_block: usize,
    /// The positions of the block's documents, one document after the other, each
    /// document's as gaps from its previous position (the first from 0): read at once the
    /// first time the block's positions are needed.
    block_positions: Vec<u32>,
    block_read: bool,
    /// How many blocks of postings have been decoded.
    blocks: u32,
    /// Added to the word's positions so the words of one occurrence line up.
    shift: u32,
    doc_freq: u32,
}

impl Word {
    fn doc(&self) -> DocId {
        self.postings
            .docs()
            .get(self.index)
            .copied()
            .unwrap_or(TERMINATED)
    }

    /// Moves to the first document at or after `target`, and returns it.
    fn seek(&mut self, target: DocId) -> DocId {
        loop {
            let docs = self.postings.docs();
            match docs.last() {
                None => return TERMINATED,
                Some(&last) if last >= target => break,
                Some(_) => {
                    let rest: u32 = self.postings.freqs()[self.index..].iter().sum();
                    self.block_offset += (self.in_block + rest as usize) as u64;
                    self.postings.advance();
                    self.blocks += 1;
                    self.index = 0;
                    self.in_block = 0;
                    self.block_read = false;
                }
            }
        }
        let docs = self.postings.docs();
        let freqs = self.postings.freqs();
        while docs[self.index] < target {
            self.in_block += freqs[self.index] as usize;
            self.index += 1;
        }
        docs[self.index]
    }

    /// The document's positions, shifted, in increasing order.
    fn positions(&mut self) -> impl Iterator<Item = u32> + '_ {
        let freqs = self.postings.freqs();
        if !self.block_read {
            let total: u32 = freqs.iter().sum();
            self.block_positions.resize(total as usize, 0);
            self.positions
                .read(self.block_offset, &mut self.block_positions);
            self.block_read = true;
        }
        let freq = freqs[self.index] as usize;
        self.block_positions[self.in_block..self.in_block + freq]
            .iter()
            .scan(self.shift, |at, gap| {
                *at += gap;
                Some(*at)
            })
    }
}

struct DensePhraseScorer {
    /// Rarest first.
    words: Vec<Word>,
    scoring: PhraseScoring,
    doc: DocId,
    /// How many times the phrase occurs in `doc`.
    count: u32,
    /// The positions where the phrase could still occur.
    left: Vec<u32>,
    /// A bit per position of the document, set where the first word is (two-word phrases);
    /// all clear between documents.
    marks: Vec<u64>,
    /// How many documents holding every word were checked for the phrase.
    checked: u32,
}

impl DensePhraseScorer {
    /// Moves to the first document at or after `target` holding the phrase.
    fn find(&mut self, mut target: DocId) -> DocId {
        'candidates: loop {
            let candidate = self.words[0].seek(target);
            if candidate == TERMINATED {
                self.doc = TERMINATED;
                return TERMINATED;
            }
            for word in &mut self.words[1..] {
                let doc = word.seek(candidate);
                if doc != candidate {
                    target = doc;
                    continue 'candidates;
                }
            }
            self.checked += 1;
            self.count = self.occurrences();
            if self.count > 0 {
                self.doc = candidate;
                return candidate;
            }
            target = candidate + 1;
        }
    }

    /// How many times the words line up in the document all words are at.
    fn occurrences(&mut self) -> u32 {
        let (first, rest) = self.words.split_first_mut().expect("two words or more");
        self.left.clear();
        self.left.extend(first.positions());
        if let [second] = rest {
            return pair_occurrences(&self.left, second, &mut self.marks);
        }
        for word in rest {
            // Keeps the positions this word is at too (a merge of two short sorted lists).
            let mut positions = word.positions();
            let mut next = positions.next();
            let mut kept = 0;
            for i in 0..self.left.len() {
                let p = self.left[i];
                while let Some(q) = next
                    && q < p
                {
                    next = positions.next();
                }
                if next == Some(p) {
                    self.left[kept] = p;
                    kept += 1;
                }
            }
            self.left.truncate(kept);
            if kept == 0 {
                return 0;
            }
        }
        self.left.len() as u32
    }
}

/// How many of `second`'s positions are among `first` (the first word's, shifted alike): each
/// of `first` marks its bit, each of `second`'s reads one, and the marks are cleared again. A
/// merge of the two sorted lists would instead branch on every comparison, unpredictably.
fn pair_occurrences(first: &[u32], second: &mut Word, marks: &mut Vec<u64>) -> u32 {
    let Some(&last) = first.last() else {
        return 0;
    };
    let words = last as usize / 64 + 1;
    if marks.len() < words {
        marks.resize(words, 0);
    }
    for &p in first {
        marks[p as usize / 64] |= 1 << (p % 64);
    }
    let mut count = 0;
    for p in second.positions() {
        count += marks
            .get(p as usize / 64)
            .map_or(0, |w| (w >> (p % 64)) as u32 & 1);
    }
    for &p in first {
        marks[p as usize / 64] = 0;
    }
    count
}

impl DensePhraseScorer {
    /// Whether the search jumps so far between the documents it asks for (another clause,
    /// such as a permission admitting few documents, leads it) that decoding every block costs
    /// more than tantivy's jumps over them.
    fn jumps_far(&self) -> bool {
        let blocks: u32 = self.words.iter().map(|w| w.blocks).sum();
        blocks > HAND_OVER_AFTER_BLOCKS && blocks > 2 * self.checked
    }
}

/// How many blocks the walk decodes before it may hand over to tantivy's scorer.
const HAND_OVER_AFTER_BLOCKS: u32 = 64;

/// The walk, handed over to tantivy's scorer for the rest of the segment if the search turns
/// out to jump far ([`DensePhraseScorer::jumps_far`]). Both match alike, so it can change
/// hands at any document.
struct AdaptivePhraseScorer {
    dense: DensePhraseScorer,
    tantivy: Box<dyn Scorer>,
    handed_over: bool,
    /// Handed over, and tantivy's scorer not asked anything yet.
    fresh: bool,
}

impl AdaptivePhraseScorer {
    fn hand_over_if_far(&mut self) {
        if !self.handed_over && self.dense.jumps_far() {
            self.handed_over = true;
            self.fresh = true;
        }
    }
}

impl DocSet for AdaptivePhraseScorer {
    fn advance(&mut self) -> DocId {
        if self.handed_over {
            self.tantivy.advance()
        } else {
            self.dense.advance()
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.hand_over_if_far();
        if !self.handed_over {
            return self.dense.seek(target);
        }
        self.fresh = false;
        if self.tantivy.doc() >= target {
            return self.tantivy.doc();
        }
        self.tantivy.seek(target)
    }

    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        self.hand_over_if_far();
        if !self.handed_over {
            return self.dense.seek_danger(target);
        }
        // tantivy's scorer starts at its first match, which may be past the target; once it
        // has answered, its document means nothing until it finds one.
        if std::mem::take(&mut self.fresh) && self.tantivy.doc() >= target {
            return if self.tantivy.doc() == target {
                SeekDangerResult::Found
            } else {
                SeekDangerResult::SeekLowerBound(self.tantivy.doc())
            };
        }
        self.tantivy.seek_danger(target)
    }

    fn doc(&self) -> DocId {
        if self.handed_over {
            self.tantivy.doc()
        } else {
            self.dense.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.dense.size_hint()
    }

    fn cost(&self) -> u64 {
        self.dense.cost()
    }
}

impl Scorer for AdaptivePhraseScorer {
    fn score(&mut self) -> Score {
        if self.handed_over {
            self.tantivy.score()
        } else {
            self.dense.score()
        }
    }
}

impl DensePhraseScorer {
    /// Whether `target` holds the phrase, without looking past it when it does not: what an
    /// intersection led by another clause asks (tantivy's `seek_danger`). After a miss, only
    /// further calls with greater targets may follow until one is found.
    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        if self.doc >= target {
            return if self.doc == target {
                SeekDangerResult::Found
            } else {
                SeekDangerResult::SeekLowerBound(self.doc)
            };
        }
        let mut lower = target;
        for word in &mut self.words {
            lower = lower.max(word.seek(target));
        }
        if lower == TERMINATED {
            self.doc = TERMINATED;
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        }
        if lower > target {
            return SeekDangerResult::SeekLowerBound(lower);
        }
        self.checked += 1;
        self.count = self.occurrences();
        if self.count > 0 {
            self.doc = target;
            SeekDangerResult::Found
        } else {
            SeekDangerResult::SeekLowerBound(target + 1)
        }
    }
}

impl DocSet for DensePhraseScorer {
    fn advance(&mut self) -> DocId {
        if self.doc == TERMINATED {
            return TERMINATED;
        }
        self.find(self.doc + 1)
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        self.find(target)
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    // As tantivy's phrase scorer estimates, so that queries are planned alike.
    fn size_hint(&self) -> u32 {
        self.words[0].doc_freq / (10 * self.words.len() as u32)
    }

    fn cost(&self) -> u64 {
        u64::from(self.words[0].doc_freq) * 10 * self.words.len() as u64
    }
}

impl Scorer for DensePhraseScorer {
    fn score(&mut self) -> Score {
        self.scoring.score(self.doc, self.count)
    }
}

/// How many occurrences of a phrase in a document have their scores tabled.
const TABLED: u32 = 4;

/// BM25's score of 1 to [`TABLED`] occurrences for every field length, so the usual match
/// costs a look-up instead of a division. The same numbers: each is computed by `bm25`.
fn score_table(bm25: Option<&Bm25Weight>) -> Vec<[Score; 256]> {
    let Some(bm25) = bm25 else {
        return Vec::new();
    };
    (1..=TABLED)
        .map(|count| std::array::from_fn(|fieldnorm| bm25.score(fieldnorm as u8, count)))
        .collect()
}

/// For each sequence of words the user's query analyses into, the readings found: the words'
/// positions for an exact phrase, `None` for one with slop or a prefix.
type Readings = HashMap<Vec<Term>, Vec<Option<Vec<(usize, Term)>>>>;

/// `query` with each exact phrase in `field` answered by [`FrequentPhrase`].
///
/// tantivy's parsed phrase does not tell where its words stand (stop words leave gaps), so the
/// user's query `text` is parsed again into tantivy's grammar and each of its words or quoted
/// phrases is analysed as the parser does it. A phrase is replaced when exactly one
/// exact reading of its words was found; anything else stays as parsed. `analyzer` gives the
/// field's analyzer, asked for only when the query holds a phrase.
pub fn exact_phrases(
    query: Box<dyn Query>,
    text: &str,
    field: Field,
    field_name: &str,
    analyzer: impl FnOnce() -> Option<TextAnalyzer>,
    kept: Option<(&Arc<SegmentCaches>, bool)>,
) -> Box<dyn Query> {
    // Most searches hold no phrase: they are not parsed again.
    if !has_phrase(query.as_ref()) {
        return query;
    }
    let Some(mut analyzer) = analyzer() else {
        return query;
    };
    let Ok(ast) = tantivy::query_grammar::parse_query(text) else {
        return query;
    };
    let mut readings: Readings = HashMap::new();
    literals(&ast, &mut |literal| {
        if literal
            .field_name
            .as_deref()
            .is_some_and(|f| f != field_name)
        {
            return;
        }
        let mut terms = Vec::new();
        analyzer
            .token_stream(&literal.phrase)
            .process(&mut |token| {
                terms.push((token.position, Term::from_field_text(field, &token.text)));
            });
        if terms.len() < 2 {
            return;
        }
        let words = terms.iter().map(|(_, t)| t.clone()).collect();
        let exact = (literal.slop == 0 && !literal.prefix).then_some(terms);
        let seen = readings.entry(words).or_default();
        if !seen.contains(&exact) {
            seen.push(exact);
        }
    });
    rewrite(query, &readings, kept)
}

/// Calls `visit` with every literal of `ast`.
fn literals(ast: &UserInputAst, visit: &mut dyn FnMut(&UserInputLiteral)) {
    match ast {
        UserInputAst::Clause(clauses) => {
            for (_, clause) in clauses {
                literals(clause, visit);
            }
        }
        UserInputAst::Boost(inner, _) => literals(inner, visit),
        UserInputAst::Leaf(leaf) => {
            if let UserInputLeaf::Literal(literal) = leaf.as_ref() {
                visit(literal);
            }
        }
    }
}

/// Whether `query` holds a phrase where [`rewrite`] looks for one.
fn has_phrase(query: &dyn Query) -> bool {
    query.is::<PhraseQuery>()
        || query.downcast_ref::<BooleanQuery>().is_some_and(|b| {
            b.clauses()
                .iter()
                .any(|(_, clause)| has_phrase(clause.as_ref()))
        })
}

fn rewrite(
    query: Box<dyn Query>,
    readings: &Readings,
    kept: Option<(&Arc<SegmentCaches>, bool)>,
) -> Box<dyn Query> {
    if let Some(phrase) = query.downcast_ref::<PhraseQuery>() {
        if let Some([Some(terms)]) = readings.get(&phrase.phrase_terms()).map(Vec::as_slice) {
            let phrase = FrequentPhrase::new(terms.clone());
            return Box::new(match kept {
                Some((caches, walk)) => phrase.kept_in(caches.clone(), walk),
                None => phrase,
            });
        }
        return query;
    }
    if let Some(boolean) = query.downcast_ref::<BooleanQuery>() {
        let clauses = boolean
            .clauses()
            .iter()
            .map(|(occur, clause)| (*occur, rewrite(clause.box_clone(), readings, kept)))
            .collect();
        return Box::new(BooleanQuery::new(clauses));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{IndexedDoc, SearchIndex};
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::{Occur, TermQuery};
    use tantivy::{DocAddress, Searcher};

    /// Document `i` of the search tests, in one of three offices, with `text`.
    fn doc(i: usize, text: String) -> IndexedDoc {
        IndexedDoc {
            signed: false,
            signers: Vec::new(),
            text,
            ..crate::index::search::tests::doc(i, i as i64)
        }
    }

    fn body_term(index: &SearchIndex, word: &str) -> Term {
        Term::from_field_text(index.fields().body, word)
    }

    /// Every match with its score, and the count with scoring off.
    fn matches(searcher: &Searcher, query: &dyn Query) -> (Vec<(DocAddress, f32)>, usize) {
        let mut all: Vec<(DocAddress, f32)> = searcher
            .search(query, &TopDocs::with_limit(100_000).order_by_score())
            .expect("searched")
            .into_iter()
            .map(|(score, address)| (address, score))
            .collect();
        all.sort_by_key(|(a, _)| *a);
        let count = searcher.search(query, &Count).expect("counted");
        (all, count)
    }

    /// The walking scorer must match exactly the documents tantivy's phrase scorer matches,
    /// with the same scores: frequent words at every distance, repeated in a document, across
    /// blocks of postings and segments, with deletions, alone and under a filter that makes
    /// it jump (seek) between documents.
    #[test]
    fn matches_and_scores_like_tantivys_phrase_scorer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        // Frequent words (each in most documents), one rare word, and stop words that leave
        // gaps in the positions.
        let vocabulary = [
            "permesso",
            "di",
            "costruire",
            "parere",
            "favorevole",
            "silenzio",
            "assenso",
            "del",
            "responsabile",
            "procedimento",
            "il",
            "comune",
        ];
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        for (segment, range) in [(1, 0..700), (2, 700..1000), (3, 1000..1300)] {
            for i in range {
                let words: Vec<&str> = (0..5 + next(40)).map(|_| vocabulary[next(12)]).collect();
                let mut text = words.join(" ");
                if i % 97 == 0 {
                    text.push_str(" tettoia abusiva");
                }
                // Some documents hold a phrase more times than the scores tabled.
                if i % 89 == 0 {
                    text.push_str(&" silenzio assenso".repeat(1 + i % 7));
                }
                index.add(&doc(i, text)).expect("added");
            }
            index.commit(segment).expect("committed");
        }
        for i in (5..1300).step_by(11) {
            index.delete(crate::domain::DocumentId::numbered(i as u128));
        }
        index.commit(4).expect("committed");
        let searcher = index.searcher();

        let phrases: Vec<Vec<(usize, &str)>> = vec![
            vec![(0, "permess"), (2, "costru")],
            vec![(0, "parer"), (1, "favorevol")],
            vec![(0, "silenz"), (1, "assens")],
            vec![(0, "responsabil"), (2, "procediment")],
            vec![(0, "comun"), (1, "comun")],
            vec![(0, "parer"), (1, "parer"), (2, "parer")],
            vec![(0, "permess"), (1, "costru"), (2, "parer")],
            // A rare word: tantivy's scorer runs in every segment.
            vec![(0, "tettoi"), (1, "abusiv")],
            // A word in no document.
            vec![(0, "permess"), (1, "sanatori")],
        ];
        let office = Term::from_field_text(index.fields().office, "b");
        let caches = Arc::new(SegmentCaches::default());
        let mut dense_matches = 0;
        for phrase in &phrases {
            let terms: Vec<(usize, Term)> = phrase
                .iter()
                .map(|(o, w)| (*o, body_term(&index, w)))
                .collect();
            let ours = FrequentPhrase::new(terms.clone());
            let theirs = PhraseQuery::new_with_offset(terms.clone());
            let expected = matches(&searcher, &theirs);
            assert_eq!(matches(&searcher, &ours), expected, "{phrase:?}");
            // Kept: walked and kept the first time, read from what was kept the next.
            let kept = FrequentPhrase::new(terms.clone()).kept_in(caches.clone(), true);
            // A search that may not walk reads what was kept, or matches as without it.
            let reader_only = FrequentPhrase::new(terms).kept_in(caches.clone(), false);
            assert_eq!(
                matches(&searcher, &reader_only),
                expected,
                "{phrase:?} not kept yet"
            );
            let key = reader_only.key();
            for reader in searcher.segment_readers() {
                let kept_now = caches.phrase(reader.segment_id(), &key);
                assert!(kept_now.is_none(), "{phrase:?}: not walked");
            }
            assert_eq!(matches(&searcher, &kept), expected, "{phrase:?} kept");
            assert_eq!(matches(&searcher, &kept), expected, "{phrase:?} read back");
            // The best ten, ranked from the kept matches skipping blocks that cannot reach them.
            let top = |q: &dyn Query| {
                searcher
                    .search(q, &TopDocs::with_limit(10).order_by_score())
                    .expect("top ten")
            };
            assert_eq!(top(&kept), top(&theirs), "{phrase:?} top ten");
            assert_eq!(
                matches(&searcher, &reader_only),
                expected,
                "{phrase:?} read only"
            );
            if phrase[0].1 != "tettoi" {
                dense_matches += expected.1;
            }
            // Under a filter, the phrase is sought document by document.
            let filtered = |q: Box<dyn Query>| {
                BooleanQuery::new(vec![
                    (Occur::Must, q),
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(office.clone(), IndexRecordOption::Basic)),
                    ),
                ])
            };
            assert_eq!(
                matches(&searcher, &filtered(Box::new(ours.clone()))),
                matches(&searcher, &filtered(Box::new(theirs.clone()))),
                "{phrase:?} under a filter"
            );
            assert_eq!(
                matches(&searcher, &filtered(Box::new(kept))),
                matches(&searcher, &filtered(Box::new(theirs.clone()))),
                "{phrase:?} kept, under a filter"
            );
        }
        assert!(
            dense_matches > 200,
            "the phrases match often: {dense_matches}"
        );
        // The frequent phrases' matches were kept in every segment; the rare one's not.
        for reader in searcher.segment_readers() {
            let kept = |phrase: &[(usize, &str)]| {
                let terms: Vec<(usize, Term)> = phrase
                    .iter()
                    .map(|(o, w)| (*o, body_term(&index, w)))
                    .collect();
                let key = FrequentPhrase::new(terms).key();
                caches.phrase(reader.segment_id(), &key).is_some()
            };
            assert!(kept(&phrases[2]), "silenzio assenso");
            assert!(!kept(&phrases[7]), "tettoia abusiva");
        }
        // The frequent phrases do take the walking scorer.
        let weight = FrequentPhrase::new(vec![
            (0, body_term(&index, "silenz")),
            (1, body_term(&index, "assens")),
        ])
        .phrase_weight(EnableScoring::enabled_from_searcher(&searcher))
        .expect("weight");
        for reader in searcher.segment_readers() {
            let plan = weight.plan(reader, 1.0).expect("plan");
            assert!(matches!(plan, Plan::Walk(_)));
        }
    }

    /// The best matches of a kept phrase are ranked from its blocks of matches, skipping those
    /// whose best possible score cannot reach the page: the same page as scoring every match.
    #[test]
    fn kept_matches_rank_the_best_skipping_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        for i in 0..5_000 {
            // Occurrences and lengths vary, and the best documents are spread over the segment.
            let times = 1 + usize::from(i % 37 == 0) * (i % 5);
            let text = format!(
                "{} {}",
                "silenzio assenso ".repeat(times),
                "comune ".repeat(i % 23)
            );
            index.add(&doc(i, text)).expect("added");
        }
        index.commit(1).expect("committed");
        let searcher = index.searcher();
        let terms = vec![
            (0, body_term(&index, "silenz")),
            (1, body_term(&index, "assens")),
        ];
        let caches = Arc::new(SegmentCaches::default());
        let kept = FrequentPhrase::new(terms.clone()).kept_in(caches.clone(), true);
        let theirs = PhraseQuery::new_with_offset(terms);
        // Counting walks the segment and keeps the matches.
        assert_eq!(searcher.search(&kept, &Count).expect("count"), 5_000);
        let key = kept.key();
        let reader = &searcher.segment_readers()[0];
        let blocks = caches
            .phrase(reader.segment_id(), &key)
            .expect("kept")
            .bounds
            .len();
        assert_eq!(blocks, 5_000usize.div_ceil(MATCH_BLOCK));
        for limit in [1, 10, 100] {
            let top = |q: &dyn Query| {
                searcher
                    .search(q, &TopDocs::with_limit(limit).order_by_score())
                    .expect("top")
            };
            assert_eq!(top(&kept), top(&theirs), "the best {limit}");
        }
    }

    /// A search led by another clause that admits few documents makes the walk decode
    /// blocks it has no use for; it then hands over to tantivy's scorer, and still matches
    /// and scores alike. A search that visits every match never hands over.
    #[test]
    fn hands_over_to_tantivy_when_the_search_jumps_far() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        for i in 0..20_000 {
            let text = match i % 3 {
                0 => "silenzio assenso",
                1 => "assenso silenzio",
                _ => "silenzio assenso silenzio assenso comune",
            };
            index.add(&doc(i, text.into())).expect("added");
        }
        index.commit(1).expect("committed");
        let searcher = index.searcher();
        let reader = searcher.segment_reader(0);
        let terms = vec![
            (0, body_term(&index, "silenz")),
            (1, body_term(&index, "assens")),
        ];
        let scoring = EnableScoring::enabled_from_searcher(&searcher);
        let weight = FrequentPhrase::new(terms.clone())
            .phrase_weight(scoring)
            .expect("weight");
        let theirs_weight = PhraseQuery::new_with_offset(terms)
            .weight(scoring)
            .expect("weight");
        let adaptive = |scorer: &dyn Scorer| {
            scorer
                .downcast_ref::<AdaptivePhraseScorer>()
                .expect("the walk")
                .handed_over
        };

        let mut ours = weight.scorer(reader, 1.0).expect("scorer");
        let mut theirs = theirs_weight.scorer(reader, 1.0).expect("scorer");
        let mut target = 0;
        while target < 20_000 {
            let target_now = target.max(theirs.doc());
            assert_eq!(
                ours.seek(target_now),
                theirs.seek(target_now),
                "seek {target}"
            );
            assert_eq!(ours.score(), theirs.score(), "score at {}", ours.doc());
            target += 997;
        }
        assert!(adaptive(ours.as_ref()), "jumping far hands over");
        while theirs.doc() != TERMINATED {
            assert_eq!(ours.advance(), theirs.advance());
        }

        let mut ours = weight.scorer(reader, 1.0).expect("scorer");
        let mut theirs = theirs_weight.scorer(reader, 1.0).expect("scorer");
        let mut expected = HashMap::new();
        while theirs.doc() != TERMINATED {
            assert_eq!(ours.doc(), theirs.doc());
            assert_eq!(ours.score(), theirs.score());
            expected.insert(theirs.doc(), theirs.score());
            let next = ours.doc() + 1;
            assert_eq!(ours.seek(next), theirs.seek(next));
        }
        assert_eq!(expected.len(), 13_333);
        assert!(
            !adaptive(ours.as_ref()),
            "visiting every match stays on the walk"
        );

        // Led by an intersection, which asks only whether a document matches, from the
        // first document on and again after the hand-over.
        let mut ours = weight.scorer(reader, 1.0).expect("scorer");
        for target in (0..20_000).step_by(499).chain([TERMINATED]) {
            let found = ours.seek_danger(target) == SeekDangerResult::Found;
            assert_eq!(found, expected.contains_key(&target), "{target}");
            if found {
                assert_eq!(ours.doc(), target);
                assert_eq!(Some(&ours.score()), expected.get(&target));
            }
        }
        assert!(adaptive(ours.as_ref()), "jumping far hands over");
    }

    /// The phrases of a user's query become [`FrequentPhrase`]s with the words' positions in
    /// the phrase, stop words counted; phrases with slop stay tantivy's.
    #[test]
    fn user_phrases_are_read_with_their_gaps() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(dir.path()).expect("index");
        let body = index.fields().body;
        let mut parser = tantivy::query::QueryParser::for_index(index.index(), vec![body]);
        parser.set_conjunction_by_default();
        let rewritten = |q: &str| {
            let parsed = parser.parse_query(q).expect("parsed");
            exact_phrases(
                parsed,
                q,
                body,
                "body",
                || Some(crate::index::italian_analyzer()),
                None,
            )
        };
        let query = rewritten("\"permesso di costruire\"");
        let phrase = query.downcast_ref::<FrequentPhrase>().expect("a phrase");
        assert_eq!(
            phrase.terms,
            vec![
                (0, body_term(&index, "permess")),
                (2, body_term(&index, "costru"))
            ]
        );
        // Inside a conjunction, beside a word.
        let query = rewritten("tettoia \"parere favorevole\"");
        let boolean = query.downcast_ref::<BooleanQuery>().expect("a conjunction");
        let phrases: Vec<&FrequentPhrase> = boolean
            .clauses()
            .iter()
            .filter_map(|(_, q)| q.downcast_ref::<FrequentPhrase>())
            .collect();
        assert_eq!(phrases.len(), 1);
        assert_eq!(phrases[0].terms[1], (1, body_term(&index, "favorevol")));
        // A phrase with slop is left to tantivy.
        let query = rewritten("\"parere favorevole\"~2");
        assert!(query.is::<PhraseQuery>());
        // The same words read two ways are left to tantivy too.
        let query = rewritten("\"parere favorevole\" OR \"parere di favorevole\"");
        let boolean = query.downcast_ref::<BooleanQuery>().expect("a disjunction");
        assert!(boolean.clauses().iter().all(|(_, q)| q.is::<PhraseQuery>()));
    }
}
