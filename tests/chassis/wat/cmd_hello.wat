;; WASI command: "hello\n" to stdout, "oops\n" to stderr, copies stdin to stdout,
;; exits with argc - 1 (the number of arguments after the program name).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello\n")
  (data (i32.const 120) "oops\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $write (i32.const 1) (i32.const 100) (i32.const 6))
    (call $write (i32.const 2) (i32.const 120) (i32.const 5))
    (block $eof
      (loop $copy
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (i32.const 4096))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (br_if $eof (i32.eqz (i32.load (i32.const 24))))
        (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 24)))
        (br $copy)))
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (call $proc_exit (i32.sub (i32.load (i32.const 32)) (i32.const 1)))))
