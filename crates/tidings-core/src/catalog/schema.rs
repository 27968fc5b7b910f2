//! Payload schemas from the contract types: `schema_for` (feature `schema`) and the probe
//! `#[derive(Event)]` expands to, which finds a `schemars::JsonSchema` impl on the concrete
//! event type by autoref specialisation and falls back to "no schema" without one.

/// The JSON Schema (draft-07, sub-schemas inlined) of `T`, as the catalog stores it.
///
/// Draft-07 because it is what AsyncAPI documents embed
/// (`application/schema+json;version=draft-07`); inlined so that every event's schema is
/// one self-contained document that `tidings validate` can compare field by field.
#[cfg(feature = "schema")]
pub fn schema_for<T: schemars::JsonSchema + ?Sized>() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The probe behind `Event::payload_schema`; not part of the public API.
///
/// `(&&Probe::<T>::new()).payload_schema()` picks `WithSchema` (implemented for
/// `&Probe<T>` when `T: JsonSchema`) before `WithoutSchema` (implemented for every
/// `Probe<T>`), because method lookup tries the receiver `&&Probe<T>` before auto-deref.
/// It only works on a concrete type, which is what the derive has.
#[doc(hidden)]
pub mod probe {
    use std::marker::PhantomData;

    /// A zero-sized stand-in for the event type.
    #[derive(Debug)]
    pub struct Probe<T: ?Sized>(PhantomData<fn() -> Box<T>>);

    impl<T: ?Sized> Probe<T> {
        /// The probe of `T`.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Probe(PhantomData)
        }
    }

    impl<T: ?Sized> Default for Probe<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Chosen when the event type implements `schemars::JsonSchema`.
    #[cfg(feature = "schema")]
    pub trait WithSchema {
        /// The payload schema.
        fn payload_schema(&self) -> Option<serde_json::Value>;
    }

    #[cfg(feature = "schema")]
    impl<T: schemars::JsonSchema + ?Sized> WithSchema for &Probe<T> {
        fn payload_schema(&self) -> Option<serde_json::Value> {
            Some(super::schema_for::<T>())
        }
    }

    /// The fallback: no schema.
    pub trait WithoutSchema {
        /// No payload schema.
        fn payload_schema(&self) -> Option<serde_json::Value>;
    }

    impl<T: ?Sized> WithoutSchema for Probe<T> {
        fn payload_schema(&self) -> Option<serde_json::Value> {
            None
        }
    }
}

/// Expands, inside `#[derive(Event)]`'s impl, to `Event::payload_schema` for the concrete
/// type; not part of the public API.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __event_payload_schema {
    ($ty:ty) => {
        fn payload_schema() -> ::core::option::Option<$crate::__private::serde_json::Value> {
            #[allow(unused_imports)]
            use $crate::__private::probe::{WithSchema as _, WithoutSchema as _};
            (&&$crate::__private::probe::Probe::<$ty>::new()).payload_schema()
        }
    };
}

/// Without the `schema` feature, events keep the default `payload_schema` (none).
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __event_payload_schema {
    ($ty:ty) => {};
}
