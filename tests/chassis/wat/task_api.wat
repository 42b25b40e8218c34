;; Task ABI: calls api_call("search/web", payload) N times, N = the payload's first digit (1-9).
;; Returns the last response, or {"error": "refused"|"failed"|"other"} on a negative code.
(module
  (import "infrafabric" "api_call" (func $api (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "search/web")
  (data (i32.const 16) "{\"error\":\"refused\"}")
  (data (i32.const 48) "{\"error\":\"failed\"}")
  (data (i32.const 80) "{\"error\":\"other\"}")
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq (memory.grow
                      (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16)))
                                          (i32.const 16))
                               (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $r i64)
    (local.set $n (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
    (block $done
      (loop $again
        (local.set $r (call $api (i32.const 0) (i32.const 10) (local.get $ptr) (local.get $len)))
        (br_if $done (i32.and (i64.lt_s (local.get $r) (i64.const 0))
                              (i64.ge_s (local.get $r) (i64.const -255))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br_if $again (i32.gt_s (local.get $n) (i32.const 0)))))
    (if (i64.eq (local.get $r) (i64.const -1)) (then (return (i64.const 68719476755))))   ;; 16<<32 | 19
    (if (i64.eq (local.get $r) (i64.const -2)) (then (return (i64.const 206158430226))))  ;; 48<<32 | 18
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i64.const 343597383697)))) ;; 80<<32 | 17
    (local.get $r)))
