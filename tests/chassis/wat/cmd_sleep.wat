;; WASI command that sleeps in poll_oneoff on a monotonic clock: 10 ms with no
;; arguments, an hour with any. Prints "awake\n" when the poll returned its one
;; event (userdata 0x1234), "bad\n" otherwise.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "awake\n")
  (data (i32.const 120) "bad\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    ;; one clock subscription at 200: userdata, tag 0 (clock), clock 1 (monotonic), timeout, relative
    (i64.store (i32.const 200) (i64.const 0x1234))
    (i32.store8 (i32.const 208) (i32.const 0))
    (i32.store (i32.const 216) (i32.const 1))
    (i64.store (i32.const 224)
      (select (i64.const 3600000000000) (i64.const 10000000)
              (i32.gt_u (i32.load (i32.const 32)) (i32.const 1))))
    (i64.store (i32.const 232) (i64.const 0))
    (i32.store16 (i32.const 240) (i32.const 0))
    (if (i32.eqz (call $poll (i32.const 200) (i32.const 300) (i32.const 1) (i32.const 400)))
      (then
        (if (i32.and (i32.eq (i32.load (i32.const 400)) (i32.const 1))
                     (i64.eq (i64.load (i32.const 300)) (i64.const 0x1234)))
          (then (call $write (i32.const 100) (i32.const 6)) (return)))))
    (call $write (i32.const 120) (i32.const 4))))
