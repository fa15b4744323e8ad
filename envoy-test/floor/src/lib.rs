//! The floor under any proxy-wasm JWT filter in this Envoy: the same callbacks and host calls as
//! mesh-authn on a cached request (read the request headers, read the clock, remove the token's
//! header) with no logic at all. `bench.py` runs it beside the filter, so the table shows how much
//! of the filter's cost is the ABI itself.

#[allow(clashing_extern_declarations)]
extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
}

const REQUEST_HEADERS: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match std::alloc::Layout::array::<u8>(size) {
        // SAFETY: non-zero size.
        Ok(layout) if size > 0 => unsafe { std::alloc::alloc(layout) },
        _ => std::ptr::null_mut(),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _root_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root_id: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _headers: usize, _eos: u32) -> u32 {
    let (mut data, mut size, mut now) = (std::ptr::null_mut(), 0, 0);
    let key = "authorization";
    // SAFETY: out-pointers are valid; the returned buffer came from proxy_on_memory_allocate.
    unsafe {
        if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) == 0
            && !data.is_null()
            && size > 0
        {
            drop(Vec::from_raw_parts(data, size, size));
        }
        proxy_get_current_time_nanoseconds(&mut now);
        proxy_remove_header_map_value(REQUEST_HEADERS, key.as_ptr(), key.len());
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}
