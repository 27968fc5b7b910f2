//! The transport conformance suite against the in-memory transport: one `Memory` per
//! case, shared by every bus of the case (the services of one process).

use std::sync::Arc;

use tidings_memory::Memory;
use tidings_testing::conformance::Factory;

tidings_testing::conformance_suite!(Factory::shared("memory", Arc::new(Memory::new())));
