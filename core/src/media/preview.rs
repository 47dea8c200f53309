//! Reading a page's Open Graph tags for link previews, with a small scanner rather than an
//! HTML parser: previews need `<meta>` attributes and the `<title>`, nothing that needs a tree.

use std::collections::BTreeMap;

/// Longest title or description kept, in characters.
const MAX_TEXT: usize = 500;

/// The `og:*` properties of a page (the first of each), with the `<title>` and the meta
/// description standing in for a missing `og:title` and `og:description`.
pub fn open_graph(html: &str) -> BTreeMap<String, String> {
    let mut og = BTreeMap::new();
    let mut title = None;
    let mut description = None;
    let lower = html.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(offset) = lower[pos..].find('<') {
        let start = pos + offset;
        let rest = &lower[start..];
        if rest.starts_with("<!--") {
            pos = rest.find("-->").map_or(lower.len(), |end| start + end + 3);
            continue;
        }
        let name_end = rest[1..]
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .map_or(rest.len(), |i| i + 1);
        let tag = &rest[1..name_end];
        let Some(tag_len) = tag_end(&html[start..]) else { break };
        let tag_text = &html[start + name_end..start + tag_len];
        pos = start + tag_len;
        match tag {
            "meta" => {
                let attrs = attributes(tag_text);
                let key = attrs.get("property").or_else(|| attrs.get("name")).map(|k| k.to_ascii_lowercase());
                let (Some(key), Some(content)) = (key, attrs.get("content")) else { continue };
                if key.starts_with("og:") {
                    og.entry(key).or_insert_with(|| clean(content));
                } else if key == "description" && description.is_none() {
                    description = Some(clean(content));
                }
            }
            "title" if title.is_none() => {
                let end = lower[pos..].find("</title").map_or(lower.len(), |e| pos + e);
                title = Some(clean(&decode_entities(&html[pos..end])));
                pos = end;
            }
            // Their contents are not markup: a `<meta` inside a script is not a tag.
            "script" | "style" => {
                let close = format!("</{tag}");
                pos = lower[pos..].find(&close).map_or(lower.len(), |e| pos + e);
            }
            _ => {}
        }
    }
    if let Some(title) = title.filter(|t| !t.is_empty()) {
        og.entry("og:title".to_owned()).or_insert(title);
    }
    if let Some(description) = description.filter(|d| !d.is_empty()) {
        og.entry("og:description".to_owned()).or_insert(description);
    }
    og
}

/// Length of the tag starting at `text[0] == '<'`, up to and including its `>`, skipping `>`
/// inside quoted attribute values.
fn tag_end(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Attributes of a tag (names lower-cased, values with entities decoded).
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag.trim_end_matches('>').trim_end_matches('/');
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            return out;
        }
        let name_len = rest.find(|c: char| c.is_ascii_whitespace() || c == '=').unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remaining) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(q).unwrap_or(body.len());
                    (&body[..end], body.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(|c: char| c.is_ascii_whitespace()).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            rest = remaining;
            decode_entities(value)
        } else {
            String::new()
        };
        out.entry(name).or_insert(value);
    }
}

/// Decodes the character references that appear in titles and descriptions.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => entity.strip_prefix('#').and_then(|num| {
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => num.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Collapses whitespace and caps the length.
fn clean(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(MAX_TEXT) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_open_graph_tags() {
        let html = r#"<!DOCTYPE html><html><head>
            <title>Fallback title</title>
            <!-- <meta property="og:title" content="commented out"> -->
            <meta property="og:title" content="The &quot;real&quot; title &amp; more">
            <META PROPERTY='og:description' CONTENT='Line one
                line two'>
            <meta property="og:image" content="/img.png" />
            <meta property="og:image" content="/second.png" />
            <meta name=og:site_name content=Example>
            <script>var x = '<meta property="og:type" content="fake">';</script>
            </head><body>x > y</body></html>"#;
        let og = open_graph(html);
        assert_eq!(og["og:title"], r#"The "real" title & more"#);
        assert_eq!(og["og:description"], "Line one line two");
        assert_eq!(og["og:image"], "/img.png");
        assert_eq!(og["og:site_name"], "Example");
        assert!(!og.contains_key("og:type"));
    }

    #[test]
    fn falls_back_to_title_and_description() {
        let html = "<html><head><title> A  page &#8212; &#x41;</title><meta name=\"description\" content=\"About it\"></head></html>";
        let og = open_graph(html);
        assert_eq!(og["og:title"], "A page \u{2014} A");
        assert_eq!(og["og:description"], "About it");
    }

    #[test]
    fn survives_broken_markup() {
        for html in
            ["<", "<meta", "<meta content=\"x", "<title>unterminated", "&#xFFFFFFFF; &bogus", "<><<>>"]
        {
            let _ = open_graph(html);
        }
        assert_eq!(decode_entities("a &amp b &#99999999; c"), "a &amp b &#99999999; c");
        assert_eq!(clean(&"x".repeat(600)).chars().count(), MAX_TEXT + 1);
    }
}
