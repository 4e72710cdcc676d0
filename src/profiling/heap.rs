//! A heap profile: the live allocations jemalloc sampled (one per 2 MiB
//! allocated, on average; `profiling::allocator`), with their stacks, as
//! pprof protobuf that `go tool pprof` reads without symbolising again, or
//! as a flame graph.

use std::{collections::HashMap, io::Read, sync::Arc};

use flate2::read::GzDecoder;
use pprof::protos::Message;

use super::{
    ProfileError, ProfileFormat,
    encode::{gzip, nothing_sampled},
    memory::symbolise,
};

/// Dumps jemalloc's sampled live allocations, symbolised on the blocking
/// pool. [`ProfileError::HeapProfilingOff`] when jemalloc is not the
/// global allocator or its profiling is off or inactive.
pub async fn profile(format: ProfileFormat) -> Result<Vec<u8>, ProfileError> {
    let control = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(ProfileError::HeapProfilingOff)?;
    let mut control = Arc::clone(control).lock_owned().await;
    // Dumping while inactive "succeeds" with an empty profile: refuse instead.
    if !control.activated() {
        return Err(ProfileError::HeapProfilingOff);
    }
    symbolise(move || match format {
        ProfileFormat::Pprof => {
            let gzipped = control.dump_pprof().map_err(ProfileError::Heap)?;
            let mut profile = gunzip_profile(&gzipped)?;
            flag_symbolised_objects(&mut profile);
            let bytes = profile
                .write_to_bytes()
                .map_err(|error| ProfileError::Encode(error.to_string()))?;
            gzip(&bytes)
        }
        ProfileFormat::Flamegraph => {
            let profile = control.dump_profile().map_err(ProfileError::Heap)?;
            if profile.stacks.is_empty() {
                return Ok(nothing_sampled(
                    "no live allocation sampled (jemalloc samples one per 2 MiB allocated, on average)",
                ));
            }
            let mut options = jemalloc_pprof::FlamegraphOptions::default();
            options.title = "inuse_space".into();
            options.count_name = "bytes".into();
            profile
                .to_flamegraph(&mut options)
                .map_err(ProfileError::Heap)
        }
    })
    .await?
}

/// Decodes a gzipped pprof protobuf, as jemalloc_pprof writes it.
fn gunzip_profile(gzipped: &[u8]) -> Result<pprof::protos::Profile, ProfileError> {
    let mut bytes = Vec::new();
    GzDecoder::new(gzipped)
        .read_to_end(&mut bytes)
        .map_err(|error| ProfileError::Heap(error.into()))?;
    pprof::protos::Profile::parse_from_bytes(&bytes)
        .map_err(|error| ProfileError::Heap(error.into()))
}

/// Gives every mapping of a binary the symbol flags (`has_functions`,
/// `has_filenames`, `has_line_numbers`, `has_inline_frames`) of any mapping
/// of that binary.
///
/// Why: jemalloc_pprof symbolises every location itself, full names and
/// inlined frames included, but writes one mapping per segment of each
/// binary, all spanning the whole address space with offset 0, and flags
/// only the executable segment's. `go tool pprof` merges a binary's mappings
/// into its first one, the unflagged read-only segment, so it takes the
/// binary for unsymbolised and symbolises it again with Go's own DWARF
/// reader, which names a function by `DW_AT_name` and knows no inlined
/// frames: `{async_block#2}`, `poll`, `call_once`, and no `before_call`.
fn flag_symbolised_objects(profile: &mut pprof::protos::Profile) {
    let mut flags: HashMap<(i64, i64), [bool; 4]> = HashMap::new();
    for mapping in &profile.mapping {
        let binary = flags
            .entry((mapping.filename, mapping.build_id))
            .or_default();
        binary[0] |= mapping.has_functions;
        binary[1] |= mapping.has_filenames;
        binary[2] |= mapping.has_line_numbers;
        binary[3] |= mapping.has_inline_frames;
    }
    for mapping in &mut profile.mapping {
        [
            mapping.has_functions,
            mapping.has_filenames,
            mapping.has_line_numbers,
            mapping.has_inline_frames,
        ] = flags[&(mapping.filename, mapping.build_id)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapping_of_a_binary_carries_the_flags_of_its_symbolised_segment() {
        let segment = |id, binary, symbolised| pprof::protos::Mapping {
            id,
            filename: binary,
            build_id: binary + 10,
            has_functions: symbolised,
            has_filenames: symbolised,
            has_line_numbers: symbolised,
            has_inline_frames: symbolised,
            ..Default::default()
        };
        let mut profile = pprof::protos::Profile {
            mapping: vec![
                segment(1, 1, false),
                segment(2, 1, true),
                segment(3, 2, false),
            ],
            ..Default::default()
        };

        flag_symbolised_objects(&mut profile);

        let flags: Vec<[bool; 4]> = profile
            .mapping
            .iter()
            .map(|mapping| {
                [
                    mapping.has_functions,
                    mapping.has_filenames,
                    mapping.has_line_numbers,
                    mapping.has_inline_frames,
                ]
            })
            .collect();
        assert_eq!(flags, [[true; 4], [true; 4], [false; 4]]);
    }
}
