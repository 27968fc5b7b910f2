//! Parsing of `#[event(..)]` and `#[topic(..)]`, and the checks both derives share.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::FoundCrate;
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Error, Generics, Ident, LitInt, LitStr, Member, Meta, Path, Result};

/// Longest wire or topic name accepted, in bytes (broker names have limits around 250).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// What `#[event(..)]` says.
#[derive(Default)]
pub(crate) struct EventAttrs {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<u32>,
    pub(crate) key: Option<Member>,
    /// `crate = path`: where the tidings crate is, when the derive cannot find it.
    pub(crate) krate: Option<Path>,
}

/// What `#[topic(..)]` says.
#[derive(Default)]
pub(crate) struct TopicAttrs {
    pub(crate) name: Option<String>,
    /// `crate = path`, as for events.
    pub(crate) krate: Option<Path>,
}

/// Parses every `#[event(..)]` on the type; keys: `name`, `version`, `key`, `crate`.
pub(crate) fn event_attrs(attrs: &[Attribute]) -> Result<EventAttrs> {
    let mut out = EventAttrs::default();
    for_each_key(attrs, "event", |key, meta| match key.to_string().as_str() {
        "name" => set(
            &mut out.name,
            key,
            wire_name(meta, "lending.book-borrowed")?,
        ),
        "version" => set(&mut out.version, key, version(meta)?),
        "key" => set(&mut out.key, key, meta.value()?.parse()?),
        "crate" => set(&mut out.krate, key, crate_path(meta)?),
        _ => Err(unknown_key(
            key,
            "event",
            "`name`, `version`, `key` and `crate`",
        )),
    })?;
    Ok(out)
}

/// Parses every `#[topic(..)]` on the type; keys: `name`, `crate`.
pub(crate) fn topic_attrs(attrs: &[Attribute]) -> Result<TopicAttrs> {
    let mut out = TopicAttrs::default();
    for_each_key(attrs, "topic", |key, meta| match key.to_string().as_str() {
        "name" => set(&mut out.name, key, wire_name(meta, "lending")?),
        "crate" => set(&mut out.krate, key, crate_path(meta)?),
        _ => Err(unknown_key(key, "topic", "`name` and `crate`")),
    })?;
    Ok(out)
}

/// `crate = path` (or `crate = "path"`): the path the generated code names tidings by.
fn crate_path(meta: &ParseNestedMeta<'_>) -> Result<Path> {
    let value = meta.value()?;
    let expected = |span| {
        Error::new(
            span,
            "expected the path of the tidings crate: `crate = tidings` or `crate = my_reexport::tidings`",
        )
    };
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        lit.parse().map_err(|_| expected(lit.span()))
    } else {
        value.parse().map_err(|e| expected(e.span()))
    }
}

/// The path the generated code names the tidings crate by: `crate = ..` when given, else
/// found in the deriving crate's dependencies (`tidings`, or `tidings-core` inside this
/// workspace), `::tidings` when neither is there.
pub(crate) fn tidings_path(explicit: Option<Path>) -> TokenStream {
    if let Some(path) = explicit {
        return quote!(#path);
    }
    for (package, lib) in [("tidings", "tidings"), ("tidings-core", "tidings_core")] {
        match proc_macro_crate::crate_name(package) {
            Ok(FoundCrate::Name(name)) => {
                let name = Ident::new(&name, Span::call_site());
                return quote!(::#name);
            }
            // The package itself: its tests, examples and doc tests are crates of their
            // own that name the library by its crate name (the libraries do not derive).
            Ok(FoundCrate::Itself) => {
                let name = Ident::new(lib, Span::call_site());
                return quote!(::#name);
            }
            Err(_) => {}
        }
    }
    quote!(::tidings)
}

/// Rejects type and lifetime parameters: a wire name names one concrete type.
pub(crate) fn reject_generics(generics: &Generics, ident: &Ident, what: &str) -> Result<()> {
    match generics.params.first() {
        None => Ok(()),
        Some(param) => Err(Error::new_spanned(
            param,
            format!(
                "{what} must not be generic: a wire name stands for one concrete type; \
                 remove the parameters from `{ident}` (or wrap a concrete type in a new struct)"
            ),
        )),
    }
}

/// Checks a wire or topic name: non-empty, at most [`MAX_NAME_LEN`] bytes, only ASCII
/// letters, digits, `.`, `-` and `_`. Returns what is wrong, phrased as what to write.
pub(crate) fn check_name(name: &str, example: &str) -> std::result::Result<(), String> {
    let allowed = "use only ASCII letters, digits, `.`, `-` and `_`";
    if name.is_empty() {
        return Err(format!(
            "the name is empty: write a name such as `\"{example}\"`"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} bytes long, over the limit of {MAX_NAME_LEN}: shorten it, e.g. `\"{example}\"`",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(format!(
            "the name `{name}` contains {c:?}: {allowed}, e.g. `\"{example}\"`"
        )),
        None => Ok(()),
    }
}

/// Calls `f` with each `key = ..` of every `#[<attr>(..)]`.
fn for_each_key(
    attrs: &[Attribute],
    attr: &str,
    mut f: impl FnMut(&Ident, &ParseNestedMeta<'_>) -> Result<()>,
) -> Result<()> {
    for a in attrs.iter().filter(|a| a.path().is_ident(attr)) {
        if !matches!(a.meta, Meta::List(_)) {
            return Err(Error::new_spanned(
                a,
                format!("`#[{attr}]` needs its keys in parentheses: `#[{attr}(name = \"..\")]`"),
            ));
        }
        a.parse_nested_meta(|meta| match meta.path.get_ident() {
            Some(key) => f(&key.clone(), &meta),
            None => Err(meta.error(format!("expected a key such as `name` in `#[{attr}(..)]`"))),
        })?;
    }
    Ok(())
}

fn set<T>(slot: &mut Option<T>, key: &Ident, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(Error::new(
            key.span(),
            format!("`{key}` is given twice: keep one"),
        ));
    }
    Ok(())
}

fn unknown_key(key: &Ident, attr: &str, valid: &str) -> Error {
    Error::new(
        key.span(),
        format!("unknown key `{key}` in `#[{attr}(..)]`: the valid keys are {valid}"),
    )
}

fn wire_name(meta: &ParseNestedMeta<'_>, example: &str) -> Result<String> {
    let value = meta.value()?;
    let lit: LitStr = value.parse().map_err(|e| {
        Error::new(
            e.span(),
            format!("expected a string: `name = \"{example}\"`"),
        )
    })?;
    let name = lit.value();
    check_name(&name, example).map_err(|msg| Error::new(lit.span(), msg))?;
    Ok(name)
}

fn version(meta: &ParseNestedMeta<'_>) -> Result<u32> {
    let bad = |span| {
        Error::new(
            span,
            "the version must be a whole number of at least 1: `version = 1`",
        )
    };
    let value = meta.value()?;
    let lit: LitInt = value.parse().map_err(|e| bad(e.span()))?;
    match lit.base10_parse::<u32>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(bad(lit.span())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn names_of_ascii_letters_digits_dots_dashes_underscores_pass() {
        for name in [
            "lending.book-borrowed",
            "A_b-9.x",
            "x",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(check_name(name, "e"), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_say_what_is_allowed() {
        let empty = check_name("", "lending").unwrap_err();
        assert!(
            empty.contains("empty") && empty.contains("\"lending\""),
            "{empty}"
        );
        let long = check_name(&"a".repeat(MAX_NAME_LEN + 1), "e").unwrap_err();
        assert!(
            long.contains("201 bytes") && long.contains("limit of 200"),
            "{long}"
        );
        for (name, c) in [
            ("a b", "' '"),
            ("a/b", "'/'"),
            ("bücher", "'ü'"),
            ("a:b", "':'"),
        ] {
            let msg = check_name(name, "e").unwrap_err();
            assert!(
                msg.contains(c) && msg.contains("ASCII letters, digits"),
                "{msg}"
            );
        }
    }

    #[test]
    fn event_attrs_merge_several_attributes_and_ignore_others() {
        let input: syn::DeriveInput = parse_quote! {
            #[derive(Serialize)]
            #[event(name = "a.b", version = 3)]
            #[serde(rename_all = "camelCase")]
            #[event(key = 0)]
            struct A(u64);
        };
        let attrs = event_attrs(&input.attrs).unwrap();
        assert_eq!(attrs.name.as_deref(), Some("a.b"));
        assert_eq!(attrs.version, Some(3));
        assert_eq!(attrs.key, Some(parse_quote!(0)));
        assert!(attrs.krate.is_none());
    }

    #[test]
    fn crate_takes_a_path_or_a_string() {
        let input: syn::DeriveInput = parse_quote! {
            #[event(name = "a.b", crate = my_app::tidings)] struct A;
        };
        let path = event_attrs(&input.attrs).unwrap().krate.unwrap();
        assert_eq!(quote!(#path).to_string(), "my_app :: tidings");
        let input: syn::DeriveInput = parse_quote! {
            #[topic(name = "a", crate = "::shared::tidings")] enum T {}
        };
        let path = topic_attrs(&input.attrs).unwrap().krate.unwrap();
        assert_eq!(quote!(#path).to_string(), ":: shared :: tidings");
        assert_eq!(tidings_path(Some(path)).to_string(), ":: shared :: tidings");
        let bad: syn::DeriveInput = parse_quote! {
            #[event(crate = 3)] struct A;
        };
        let err = event_attrs(&bad.attrs).err().unwrap().to_string();
        assert!(err.contains("`crate = tidings`"), "{err}");
    }

    #[test]
    fn repeated_and_unknown_keys_are_errors() {
        let twice: syn::DeriveInput = parse_quote! {
            #[event(version = 1)] #[event(version = 2)] struct A;
        };
        let err = event_attrs(&twice.attrs).err().unwrap().to_string();
        assert_eq!(err, "`version` is given twice: keep one");
        let unknown: syn::DeriveInput = parse_quote!(
            #[topic(nmae = "x")]
            enum T {}
        );
        let err = topic_attrs(&unknown.attrs).err().unwrap().to_string();
        assert_eq!(
            err,
            "unknown key `nmae` in `#[topic(..)]`: the valid keys are `name` and `crate`"
        );
    }
}
