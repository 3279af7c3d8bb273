// Simulation RAM with a file backdoor, for sim.axi_memory.AxiMemory(backdoor=True).
//
// The contents are loaded at time 0 from the hex file named by the plusarg
// +image=<file> ($readmemh, one word per line). While `dump` is high at a clock edge,
// words +dump_first=<n> .. +dump_last=<n> are written to +dump=<file> ($writememh).
// PORTS read and write ports, synchronous, not transparent (a read of a word being
// written returns the old word), as the Amaranth memory it stands in for.
module moevit_sim_ram #(
    parameter WIDTH = 128,
    parameter DEPTH = 1024,
    parameter AW = 10,
    parameter PORTS = 1
) (
    input clk,
    input dump,
    input [PORTS-1:0] ren,
    input [PORTS*AW-1:0] raddr,
    output reg [PORTS*WIDTH-1:0] rdata,
    input [PORTS-1:0] wen,
    input [PORTS*AW-1:0] waddr,
    input [PORTS*WIDTH-1:0] wdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [8*1024-1:0] path, dump_path;
    integer first, last, p, dumping;
    // The plusargs are read once: a $value$plusargs in the clocked block would run every cycle.
    initial begin
        if ($value$plusargs("image=%s", path))
            $readmemh(path, mem);
        dumping = $value$plusargs("dump=%s", dump_path) && $value$plusargs("dump_first=%d", first)
                  && $value$plusargs("dump_last=%d", last);
    end
    always @(posedge clk) begin
        for (p = 0; p < PORTS; p = p + 1) begin
            if (ren[p])
                rdata[p*WIDTH +: WIDTH] <= mem[raddr[p*AW +: AW]];
            if (wen[p])
                mem[waddr[p*AW +: AW]] <= wdata[p*WIDTH +: WIDTH];
        end
        if (dump && dumping != 0)
            $writememh(dump_path, mem, first, last);
    end
endmodule
