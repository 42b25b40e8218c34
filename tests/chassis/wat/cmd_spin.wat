;; WASI command that never ends.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $spin (br $spin))))
