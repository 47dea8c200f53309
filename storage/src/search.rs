//! [`SearchIndex`]: the full-text index behind `/search`, a tantivy index beside the tables.
//!
//! The index is derived data. Each document is one event's searchable text (a message body, a
//! room name or topic) under the event's stream position; the event itself stays in the tables,
//! so the index stores nothing but postings and the position. Every commit records the stream
//! position it covers, so a restart resumes where it stopped, and an index that is missing,
//! unreadable or of another layout is started afresh and refilled from the tables.

use std::{
    collections::HashSet,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedRoomId, OwnedUserId};
use tantivy::{
    Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
    collector::{Count, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, EmptyQuery, Occur, Query, QueryParser, RangeQuery, TermQuery, TermSetQuery},
    schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions},
    tokenizer::{
        AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token,
        TokenStream, Tokenizer,
    },
};

use crate::{Error, Result};

/// Bumped when the documents or the analysis change: an index of another layout is rebuilt.
const LAYOUT: u32 = 1;
/// The analyzer of the text field, by name in tantivy's tokenizer registry.
const ANALYZER: &str = "hearth_text";
/// Memory of the one indexing thread (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 16 * 1024 * 1024;
/// Longer tokens are not indexed (long URLs, base64).
const MAX_TOKEN_BYTES: usize = 64;

/// Where a document's text came from: the keys of the spec's `/search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchKey {
    Body,
    Name,
    Topic,
}

impl SearchKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Body => "content.body",
            Self::Name => "content.name",
            Self::Topic => "content.topic",
        }
    }
}

/// One event's searchable text.
#[derive(Debug, Clone)]
pub struct SearchDoc {
    pub pos: u64,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub key: SearchKey,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first.
    Rank,
    /// Newest first.
    Recent,
}

/// One query: the words, and where to look.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub term: &'a str,
    pub rooms: &'a [OwnedRoomId],
    pub keys: &'a [SearchKey],
    /// Only these senders, when given.
    pub senders: Option<&'a [OwnedUserId]>,
    pub not_senders: &'a [OwnedUserId],
    pub order: SearchOrder,
    /// Only positions below this one (paging by recency).
    pub before: Option<u64>,
    /// Skip this many of the best matches (paging by rank).
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchHit {
    pub pos: u64,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct SearchHits {
    pub hits: Vec<SearchHit>,
    /// Every match, not only this page's.
    pub count: usize,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    text: Field,
    room: Field,
    sender: Field,
    key: Field,
    pos: Field,
}

/// The full-text index. Writes come from one indexer at a time; searches from any thread.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    /// Serializes writers: tantivy allows one at a time.
    writing: Mutex<()>,
    fields: Fields,
    indexed: AtomicU64,
    analyzer: TextAnalyzer,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("indexed", &self.indexed_up_to()).finish_non_exhaustive()
    }
}

fn engine(error: impl std::fmt::Display) -> Error {
    Error::Engine(format!("search index: {error}"))
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = builder.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    let room = builder.add_text_field("room", STRING);
    let sender = builder.add_text_field("sender", STRING);
    let key = builder.add_text_field("key", STRING);
    let pos = builder.add_u64_field("pos", INDEXED | FAST);
    (builder.build(), Fields { text, room, sender, key, pos })
}

/// Splits text into words, and scripts written without spaces between words (Chinese,
/// Japanese kana, Thai, Lao, Khmer, Myanmar) into single characters, so any language can be
/// searched: a query of several such characters is a phrase of them, which matches exactly the
/// text that contains it.
fn analyzer(language: Option<Language>) -> TextAnalyzer {
    let builder = TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match language {
        Some(language) => builder.filter(Stemmer::new(language)).build(),
        None => builder.build(),
    }
}

/// The stemming languages, by the names the config uses.
pub fn stemming_language(name: &str) -> Option<Option<Language>> {
    let language = match name {
        "none" => return Some(None),
        "arabic" => Language::Arabic,
        "danish" => Language::Danish,
        "dutch" => Language::Dutch,
        "english" => Language::English,
        "finnish" => Language::Finnish,
        "french" => Language::French,
        "german" => Language::German,
        "greek" => Language::Greek,
        "hungarian" => Language::Hungarian,
        "italian" => Language::Italian,
        "norwegian" => Language::Norwegian,
        "portuguese" => Language::Portuguese,
        "romanian" => Language::Romanian,
        "russian" => Language::Russian,
        "spanish" => Language::Spanish,
        "swedish" => Language::Swedish,
        "tamil" => Language::Tamil,
        "turkish" => Language::Turkish,
        _ => return None,
    };
    Some(Some(language))
}

fn unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1780..=0x17FF // Khmer
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x31F0..=0x31FF // Katakana extensions
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // halfwidth Katakana
        | 0x20000..=0x3134F // CJK extensions B to G
    )
}

#[derive(Clone, Default)]
struct WordTokenizer {
    token: Token,
}

struct WordStream<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream { text, chars: text.char_indices().peekable(), token: &mut self.token }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        self.token.text.clear();
        self.token.position = self.token.position.wrapping_add(1);
        while let Some((from, c)) = self.chars.next() {
            if !c.is_alphanumeric() {
                continue;
            }
            let mut to = from + c.len_utf8();
            if !unspaced_script(c) {
                while let Some(&(at, next)) = self.chars.peek() {
                    if !next.is_alphanumeric() || unspaced_script(next) {
                        break;
                    }
                    to = at + next.len_utf8();
                    self.chars.next();
                }
            }
            self.token.offset_from = from;
            self.token.offset_to = to;
            self.token.text.push_str(&self.text[from..to]);
            return true;
        }
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// What a commit records: the layout and the stream position the index covers.
fn payload(pos: u64) -> String {
    format!("{LAYOUT}:{pos}")
}

fn parse_payload(payload: Option<&str>) -> Option<u64> {
    let (layout, pos) = payload?.split_once(':')?;
    (layout.parse::<u32>().ok()? == LAYOUT).then_some(())?;
    pos.parse().ok()
}

impl SearchIndex {
    /// Opens the index in `dir`, or starts an empty one there when it is missing, unreadable or
    /// of another layout (the caller refills it from position 0).
    pub fn open(dir: &Path, language: Option<Language>) -> Result<Self> {
        let (index, fields, indexed) = match Self::read_existing(dir) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "search index unusable; rebuilding it");
                std::fs::remove_dir_all(dir).map_err(engine)?;
                Self::read_existing(dir)?
            }
        };
        // Failing here (another process holds the index's lock) is not a reason to rebuild.
        Self::with_index(index, fields, indexed, language)
    }

    /// The index in `dir` (created when missing) and the position it covers; an error when
    /// what is there cannot be used.
    fn read_existing(dir: &Path) -> Result<(Index, Fields, u64)> {
        std::fs::create_dir_all(dir).map_err(engine)?;
        let directory = MmapDirectory::open(dir).map_err(engine)?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(directory, schema).map_err(engine)?;
        let metas = index.load_metas().map_err(engine)?;
        let fresh = metas.segments.is_empty() && metas.payload.is_none();
        let indexed = match parse_payload(metas.payload.as_deref()) {
            Some(pos) => pos,
            None if fresh => 0,
            None => return Err(engine(format!("{} holds an index of another layout", dir.display()))),
        };
        Ok((index, fields, indexed))
    }

    /// An empty index in memory, for tests.
    pub fn in_memory(language: Option<Language>) -> Self {
        let (schema, fields) = schema();
        Self::with_index(Index::create_in_ram(schema), fields, 0, language).expect("an index in memory opens")
    }

    fn with_index(index: Index, fields: Fields, indexed: u64, language: Option<Language>) -> Result<Self> {
        let analyzer = analyzer(language);
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(engine)?;
        Ok(Self {
            index,
            reader,
            writing: Mutex::new(()),
            fields,
            indexed: AtomicU64::new(indexed),
            analyzer,
        })
    }

    /// The stream position everything at or below which is indexed.
    pub fn indexed_up_to(&self) -> u64 {
        self.indexed.load(Ordering::Acquire)
    }

    /// Adds `docs`, removes the documents at `remove`, and commits, recording that the stream
    /// is indexed up to `up_to`; searches see the change once this returns.
    ///
    /// The writer lives for one call: between rounds it holds no thread and no memory (its
    /// arena and term table are sized for a whole segment), and its merges finish before it
    /// goes, so segments do not pile up.
    pub fn apply(&self, docs: &[SearchDoc], remove: &[u64], up_to: u64) -> Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut writer: IndexWriter<TantivyDocument> =
            self.index.writer_with_num_threads(1, WRITER_MEMORY).map_err(engine)?;
        let f = self.fields;
        for pos in remove {
            writer.delete_term(Term::from_field_u64(f.pos, *pos));
        }
        for doc in docs {
            let mut document = TantivyDocument::default();
            document.add_text(f.text, &doc.text);
            document.add_text(f.room, doc.room_id.as_str());
            document.add_text(f.sender, doc.sender.as_str());
            document.add_text(f.key, doc.key.as_str());
            document.add_u64(f.pos, doc.pos);
            writer.add_document(document).map_err(engine)?;
        }
        let mut commit = writer.prepare_commit().map_err(engine)?;
        commit.set_payload(&payload(up_to));
        commit.commit().map_err(engine)?;
        self.reader.reload().map_err(engine)?;
        self.indexed.fetch_max(up_to, Ordering::AcqRel);
        writer.wait_merging_threads().map_err(engine)?;
        Ok(())
    }

    fn text_query(&self, term: &str) -> Box<dyn Query> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        parser.set_conjunction_by_default();
        // Field prefixes would reach the other fields: a colon is a separator like any other.
        let term = term.replace(':', " ");
        // Lenient parsing keeps whatever part of a malformed query makes sense.
        parser.parse_query_lenient(&term).0
    }

    fn any_of(field: Field, values: impl IntoIterator<Item = impl AsRef<str>>) -> Box<dyn Query> {
        Box::new(TermSetQuery::new(values.into_iter().map(|v| Term::from_field_text(field, v.as_ref()))))
    }

    /// The matches of `query` that its filters allow, best or newest first.
    pub fn search(&self, query: &SearchQuery<'_>) -> Result<SearchHits> {
        let f = self.fields;
        let text = self.text_query(query.term);
        if query.rooms.is_empty() || query.keys.is_empty() || query.limit == 0 || text.is::<EmptyQuery>() {
            return Ok(SearchHits::default());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, text),
            (Occur::Must, Self::any_of(f.room, query.rooms.iter().map(|r| r.as_str()))),
            (Occur::Must, Self::any_of(f.key, query.keys.iter().map(|k| k.as_str()))),
        ];
        if let Some(senders) = query.senders {
            clauses.push((Occur::Must, Self::any_of(f.sender, senders.iter().map(|s| s.as_str()))));
        }
        for sender in query.not_senders {
            let term = Term::from_field_text(f.sender, sender.as_str());
            clauses.push((Occur::MustNot, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        let query_all = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let hits = match query.order {
            SearchOrder::Recent => {
                let top = TopDocs::with_limit(query.limit).order_by_u64_field("pos", Order::Desc);
                let (top, count) = match query.before {
                    // The count is of every match, not only of those below the page's start.
                    Some(before) => {
                        let count = searcher.search(&query_all, &Count).map_err(engine)?;
                        let pos = Term::from_field_u64(f.pos, before);
                        let range = RangeQuery::new(Bound::Unbounded, Bound::Excluded(pos));
                        let page = BooleanQuery::new(vec![
                            (Occur::Must, Box::new(query_all) as Box<dyn Query>),
                            (Occur::Must, Box::new(range)),
                        ]);
                        (searcher.search(&page, &top).map_err(engine)?, count)
                    }
                    None => searcher.search(&query_all, &(top, Count)).map_err(engine)?,
                };
                let hits = top.into_iter().filter_map(|(pos, _)| Some(SearchHit { pos: pos?, score: 0.0 }));
                SearchHits { hits: hits.collect(), count }
            }
            SearchOrder::Rank => {
                let top = TopDocs::with_limit(query.limit).and_offset(query.offset).order_by_score();
                let (top, count) = searcher.search(&query_all, &(top, Count)).map_err(engine)?;
                let mut hits = Vec::with_capacity(top.len());
                for (score, address) in top {
                    let segment = searcher.segment_reader(address.segment_ord);
                    let column = segment.fast_fields().u64("pos").map_err(engine)?;
                    if let Some(pos) = column.first(address.doc_id) {
                        hits.push(SearchHit { pos, score });
                    }
                }
                SearchHits { hits, count }
            }
        };
        Ok(hits)
    }

    /// The words of `text` that the query `term` matches, as written in `text` (what a client
    /// highlights in a result).
    pub fn highlights(&self, term: &str, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut wanted = HashSet::new();
        {
            let mut stream = analyzer.token_stream(term);
            while let Some(token) = stream.next() {
                wanted.insert(token.text.clone());
            }
        }
        let mut found = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            if wanted.contains(&token.text) {
                let word = text.get(token.offset_from..token.offset_to).unwrap_or_default().to_owned();
                if !found.contains(&word) {
                    found.push(word);
                }
            }
        }
        found
    }
}

/// Where the index lives inside the storage directory.
pub fn index_dir(storage: &Path) -> PathBuf {
    storage.join("search")
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, owned_user_id};

    use super::*;

    fn doc(pos: u64, text: &str) -> SearchDoc {
        SearchDoc {
            pos,
            room_id: owned_room_id!("!r:x"),
            sender: owned_user_id!("@a:x"),
            key: SearchKey::Body,
            text: text.to_owned(),
        }
    }

    fn find(index: &SearchIndex, term: &str, order: SearchOrder) -> Vec<u64> {
        let rooms = [owned_room_id!("!r:x")];
        let query = SearchQuery {
            term,
            rooms: &rooms,
            keys: &[SearchKey::Body],
            senders: None,
            not_senders: &[],
            order,
            before: None,
            offset: 0,
            limit: 10,
        };
        index.search(&query).unwrap().hits.into_iter().map(|h| h.pos).collect()
    }

    #[test]
    fn words_stems_phrases_and_unspaced_scripts() {
        let index = SearchIndex::in_memory(Some(Language::English));
        let docs = [
            doc(1, "The cats were running"),
            doc(2, "東京都に住んでいます"),
            doc(3, "Café au lait"),
            doc(4, "a cat runs home"),
        ];
        index.apply(&docs, &[], 4).unwrap();
        assert_eq!(index.indexed_up_to(), 4);
        assert_eq!(find(&index, "cat", SearchOrder::Recent), vec![4, 1]);
        assert_eq!(find(&index, "RUN cat", SearchOrder::Recent), vec![4, 1]);
        assert_eq!(find(&index, "東京", SearchOrder::Recent), vec![2]);
        assert_eq!(find(&index, "京東", SearchOrder::Recent), Vec::<u64>::new());
        assert_eq!(find(&index, "cafe", SearchOrder::Recent), vec![3]);
        assert_eq!(find(&index, "\"cats were\"", SearchOrder::Rank), vec![1]);
        assert!(find(&index, "((( room:!r:x", SearchOrder::Rank).is_empty());
        assert!(find(&index, "", SearchOrder::Rank).is_empty());
        assert_eq!(index.highlights("cat running", "The cats were running"), vec!["cats", "running"]);

        index.apply(&[], &[4], 5).unwrap();
        assert_eq!(find(&index, "cat", SearchOrder::Rank), vec![1]);
    }

    #[test]
    fn the_position_survives_reopening_and_another_layout_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = index_dir(dir.path());
        {
            let index = SearchIndex::open(&path, None).unwrap();
            index.apply(&[doc(7, "hello")], &[], 9).unwrap();
        }
        let index = SearchIndex::open(&path, None).unwrap();
        assert_eq!(index.indexed_up_to(), 9);
        assert_eq!(find(&index, "hello", SearchOrder::Rank), vec![7]);
        drop(index);
        std::fs::write(path.join("meta.json"), "not json").unwrap();
        let index = SearchIndex::open(&path, None).unwrap();
        assert_eq!(index.indexed_up_to(), 0);
        assert!(find(&index, "hello", SearchOrder::Rank).is_empty());
    }
}
