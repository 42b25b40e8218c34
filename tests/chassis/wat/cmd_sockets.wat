;; WASI command trying the preview 1 socket calls (which act only on descriptors the host hands over):
;; sock_accept(3), sock_recv(3), sock_send(1), sock_shutdown(0). Writes the four errnos as bytes to stdout.
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; iovec at 16 -> 8 bytes at 1024
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const 8))
    (i32.store8 (i32.const 100) (call $accept (i32.const 3) (i32.const 0) (i32.const 32)))
    (i32.store8 (i32.const 101) (call $recv (i32.const 3) (i32.const 16) (i32.const 1) (i32.const 0)
                                            (i32.const 40) (i32.const 44)))
    (i32.store8 (i32.const 102) (call $send (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 0)
                                            (i32.const 48)))
    (i32.store8 (i32.const 103) (call $shutdown (i32.const 0) (i32.const 2)))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
