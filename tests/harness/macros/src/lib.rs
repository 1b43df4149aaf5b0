//! `#[needs_envoy]` for tessera's integration tests (re-exported by the harness).

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// Marks a test that starts Envoy: reported as ignored where Envoy was not installed when the
/// tests were built (outside CI), run everywhere else. Goes above `#[test]` or
/// `#[tokio::test]`, which must still see the `#[ignore]` it adds.
#[proc_macro_attribute]
pub fn needs_envoy(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[needs_envoy] takes no arguments");
    }
    if !has_test_attribute(&item) {
        return error("put #[needs_envoy] above #[test] or #[tokio::test]");
    }
    let mut out = TokenStream::new();
    if cfg!(envoy_missing) {
        out.extend(
            "#[ignore = \"no Envoy: run testenv/setup or set TESSERA_ENVOY\"]"
                .parse::<TokenStream>()
                .unwrap(),
        );
    }
    out.extend(item);
    out
}

/// True when one of the item's outer attributes is `test` or ends in `::test`.
fn has_test_attribute(item: &TokenStream) -> bool {
    let mut tokens = item.clone().into_iter();
    while let Some(TokenTree::Punct(p)) = tokens.next() {
        if p.as_char() != '#' {
            return false;
        }
        let Some(TokenTree::Group(g)) = tokens.next() else {
            return false;
        };
        if g.delimiter() != Delimiter::Bracket {
            return false;
        }
        let last_ident = g
            .stream()
            .into_iter()
            .take_while(|t| !matches!(t, TokenTree::Group(_)))
            .filter_map(|t| match t {
                TokenTree::Ident(i) => Some(i.to_string()),
                _ => None,
            })
            .last();
        if last_ident.as_deref() == Some("test") {
            return true;
        }
    }
    false
}

fn error(message: &str) -> TokenStream {
    format!("compile_error!({message:?});").parse().unwrap()
}
