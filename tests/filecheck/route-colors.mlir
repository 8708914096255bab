// route-colors: every stream between regions takes one colour on each PE of its L-shaped
// route; where none is free the route relays (`relays`: the simulator adds the target's
// relay latency for each). With `kernel_colors=22` two of mesh-8x8's 24 colours are left: the
// first two streams along row 0 fit, the third finds no colour on the 7 PEs it crosses.
// Input: hand-written (three streams of one value from PE (0, 0) to PE (7, 0)).

// RUN: compiler.opt --pass 'route-colors{kernel_colors=22}' %s | filecheck %s
// RUN: compiler.opt --pass route-colors %s | filecheck %s --check-prefix=ROOM

// CHECK:      "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], src_region = [0, 0, 1, 1], stage = 0 : i64}
// CHECK-NEXT: "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], src_region = [0, 0, 1, 1], stage = 1 : i64}
// CHECK-NEXT: "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], relays = 7 : i64, src_region = [0, 0, 1, 1], stage = 2 : i64}

// ROOM-NOT:   relays

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}} {
  func.func @f(%arg0: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
    %0 = "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], src_region = [0, 0, 1, 1], stage = 0 : i64} : (tensor<4xf32>) -> tensor<4xf32>
    %1 = "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], src_region = [0, 0, 1, 1], stage = 1 : i64} : (tensor<4xf32>) -> tensor<4xf32>
    %2 = "wse.fabric_stream"(%arg0) {hops = 7 : i64, region = [7, 0, 1, 1], src_region = [0, 0, 1, 1], stage = 2 : i64} : (tensor<4xf32>) -> tensor<4xf32>
    return %0, %1, %2 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
  }
}
