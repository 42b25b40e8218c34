;; Task ABI with one behaviour per payload digit (the payload is a JSON integer):
;; 0 return "ok" | 1 infinite loop | 2 grow memory until refused, then trap
;; 3 grow until refused, then return "grow refused" | 4 infinite recursion | 5 recursion depth 1000, "ok"
;; 6 unreachable | 7 out-of-bounds load | 8 grow 1 MiB, "ok" | 9 invalid JSON | other: output out of bounds
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "\"ok\"")
  (data (i32.const 8) "\"grow refused\"")
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func $recurse (param $d i32) (result i32)
    (if (result i32) (i32.eqz (local.get $d))
      (then (i32.const 0))
      (else (i32.add (call $recurse (i32.sub (local.get $d) (i32.const 1))) (i32.const 1)))))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (block $bad (block $b9 (block $b8 (block $b7 (block $b6 (block $b5 (block $b4 (block $b3 (block $b2
    (block $b1 (block $b0
      (br_table $b0 $b1 $b2 $b3 $b4 $b5 $b6 $b7 $b8 $b9 $bad
        (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48))))
      (return (i64.const 4)))
      (loop $spin (br $spin)) unreachable)
      (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable)
      (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
      (return (i64.const 34359738382)))  ;; 8<<32 | 14
      (drop (call $recurse (i32.const -1))) unreachable)
      (drop (call $recurse (i32.const 1000))) (return (i64.const 4)))
      unreachable)
      (drop (i32.load (i32.const -8))) unreachable)
      (drop (memory.grow (i32.const 16))) (return (i64.const 4)))
      (return (i64.const 2)))  ;; the 2 bytes `"o`: not JSON
    (i64.const -281474976710556)))  ;; (0xFFFF0000 << 32) | 100 as i64: past the end of memory
