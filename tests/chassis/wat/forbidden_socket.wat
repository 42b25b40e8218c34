;; WASI command importing sock_open, a WasmEdge extension that creates a socket: not offered, refused at load.
(module
  (import "wasi_snapshot_preview1" "sock_open" (func $open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $open (i32.const 1) (i32.const 1) (i32.const 0)))))
