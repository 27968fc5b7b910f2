// Other shapes the derives accept: tuple structs keyed by index, enum events, explicit
// versions, several `#[event]` attributes, event types behind a module path (the topic
// enum is as public as its events: it is their `TopicMember::Topic`).
#[allow(unused_imports)]
use tidings_macros::*;
use tidings_core::{Event, Publishable, Topic};

mod catalog {
    use tidings_macros::Event;
    use serde::{Deserialize, Serialize};
    use tidings_core::Event;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(name = "catalog.copies_changed.v3", version = 3)]
    #[event(key = 0)]
    pub struct CopiesChanged(pub u32, pub i64);

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(name = "Catalog.Book-Status_2")]
    pub enum BookStatus {
        Available,
        Withdrawn { reason: String },
    }
}

#[derive(Debug, Topic)]
#[topic(name = "catalog-v2_x.y")]
pub enum CatalogEvents {
    Copies(catalog::CopiesChanged),
    Status(self::catalog::BookStatus),
}

fn main() {
    use catalog::{BookStatus, CopiesChanged};
    assert_eq!(CopiesChanged::VERSION, 3);
    assert_eq!(
        Event::ordering_key(&CopiesChanged(9, -1)).as_deref(),
        Some("9")
    );
    assert_eq!(BookStatus::NAME, "Catalog.Book-Status_2");
    assert_eq!(Event::ordering_key(&BookStatus::Available), None);

    assert_eq!(CatalogEvents::NAME, "catalog-v2_x.y");
    let events = CatalogEvents::events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].name, events[0].version),
        ("catalog.copies_changed.v3", 3)
    );
    assert_eq!(events[0].type_name, "catalog::CopiesChanged");
    assert_eq!(events[1].type_name, "self::catalog::BookStatus");

    let e = CatalogEvents::from(BookStatus::Withdrawn {
        reason: "lost".into(),
    });
    assert_eq!(
        (e.event_name(), e.event_version()),
        ("Catalog.Book-Status_2", 1)
    );
    let e = CatalogEvents::from(CopiesChanged(4, 1));
    assert_eq!(Publishable::event_ordering_key(&e).as_deref(), Some("4"));
    assert!(matches!(e, CatalogEvents::Copies(CopiesChanged(4, 1))));
}
