package tflite

// How much arithmetic an invoke does, read from the graph without the
// runtime: the pool orders invokes by their expected cost (invokeGate), and
// before a model's first invoke is timed the graph is all there is. File
// size is no stand-in: deeplabv3 is a smaller file than mobilenet_v2 and
// does about seven times its work per invoke.

const (
	slotSubgraphOperators = 3
	slotOperatorOpcode    = 0
	slotOperatorInputs    = 1
	slotOperatorOutputs   = 2
	slotTensorShape       = 0
	slotTensorBuffer      = 2

	// maxWork saturates the estimate: shapes in a crafted file must not
	// overflow it.
	maxWork = int64(1) << 52
)

// weightedOps are the builtin operators whose cost is a product with
// their weights (schema.fbs BuiltinOperator): CONV_2D, DEPTHWISE_CONV_2D,
// FULLY_CONNECTED, LSTM, SVDF, UNIDIRECTIONAL_SEQUENCE_LSTM,
// BIDIRECTIONAL_SEQUENCE_LSTM, TRANSPOSE_CONV, BATCH_MATMUL, CONV_3D.
var weightedOps = map[int32]bool{3: true, 4: true, 9: true, 16: true, 27: true, 44: true, 52: true, 67: true, 126: true, 130: true}

// work estimates the multiply-accumulates of one invoke: for an operator
// with weights, its output elements times each constant weight tensor's
// elements per output channel (a convolution's kh·kw·in, a depthwise one's
// kh·kw, a fully connected layer's inputs); for any other operator, its
// output elements. Every subgraph counts once.
func (f fbReader) work() (int64, error) {
	root, err := f.deref(0)
	if err != nil {
		return 0, err
	}
	codes, err := f.tables(root, slotModelOperatorCodes)
	if err != nil {
		return 0, err
	}
	builtin := make([]int32, len(codes))
	for i, oc := range codes {
		if builtin[i], err = f.builtinCode(oc); err != nil {
			return 0, err
		}
	}
	buffers, err := f.tables(root, slotModelBuffers)
	if err != nil {
		return 0, err
	}
	subgraphs, err := f.tables(root, slotModelSubgraphs)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, sg := range subgraphs {
		w, err := f.subgraphWork(sg, builtin, buffers)
		if err != nil {
			return 0, err
		}
		total = satAdd(total, w)
	}
	return total, nil
}

func (f fbReader) subgraphWork(sg int64, builtin []int32, buffers []int64) (int64, error) {
	tensors, err := f.tables(sg, slotSubgraphTensors)
	if err != nil {
		return 0, err
	}
	ops, err := f.tables(sg, slotSubgraphOperators)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, op := range ops {
		outs, err := f.ints(op, slotOperatorOutputs)
		if err != nil {
			return 0, err
		}
		if len(outs) == 0 || outs[0] < 0 || int(outs[0]) >= len(tensors) {
			continue
		}
		outShape, err := f.ints(tensors[outs[0]], slotTensorShape)
		if err != nil {
			return 0, err
		}
		outElems := elements(outShape)
		code, err := f.opcode(op, builtin)
		if err != nil {
			return 0, err
		}
		if !weightedOps[code] || len(outShape) == 0 {
			total = satAdd(total, outElems)
			continue
		}
		channels := max(int64(outShape[len(outShape)-1]), 1)
		ins, err := f.ints(op, slotOperatorInputs)
		if err != nil {
			return 0, err
		}
		var w int64
		for _, in := range ins {
			if in < 0 || int(in) >= len(tensors) {
				continue
			}
			t := tensors[in]
			constant, err := f.constant(t, buffers)
			if err != nil {
				return 0, err
			}
			shape, err := f.ints(t, slotTensorShape)
			if err != nil {
				return 0, err
			}
			if constant && len(shape) >= 2 {
				w = satAdd(w, satMul(outElems, elements(shape)/channels))
			}
		}
		if w == 0 && len(ins) > 0 && ins[0] >= 0 && int(ins[0]) < len(tensors) {
			// Weights computed at run time (BATCH_MATMUL of two
			// activations): the shared dimension is the first input's last.
			shape, err := f.ints(tensors[ins[0]], slotTensorShape)
			if err != nil {
				return 0, err
			}
			if len(shape) > 0 {
				w = satMul(outElems, max(int64(shape[len(shape)-1]), 1))
			}
		}
		total = satAdd(total, max(w, outElems))
	}
	return total, nil
}

// opcode is an operator's builtin code (0 when its index is out of range).
func (f fbReader) opcode(op int64, builtin []int32) (int32, error) {
	pos, err := f.field(op, slotOperatorOpcode)
	if err != nil || pos == 0 {
		return builtinOr(builtin, 0), err
	}
	i, err := f.u32(pos)
	if err != nil {
		return 0, err
	}
	return builtinOr(builtin, int64(i)), nil
}

func builtinOr(builtin []int32, i int64) int32 {
	if i < 0 || i >= int64(len(builtin)) {
		return 0
	}
	return builtin[i]
}

// constant reports whether tensor t has data in the file (weights).
func (f fbReader) constant(t int64, buffers []int64) (bool, error) {
	pos, err := f.field(t, slotTensorBuffer)
	if err != nil || pos == 0 {
		return false, err // buffer 0: the schema's empty sentinel
	}
	b, err := f.u32(pos)
	if err != nil || b == 0 || int64(b) >= int64(len(buffers)) {
		return false, err
	}
	data, err := f.field(buffers[b], slotBufferData)
	if err != nil {
		return false, err
	}
	if data != 0 {
		_, n, err := f.vector(data, 1)
		return n > 0, err
	}
	off, err := f.field(buffers[b], slotBufferOffset)
	return off != 0, err
}

// ints reads the [int32] vector in a table's field (nil when absent).
func (f fbReader) ints(table int64, slot int) ([]int32, error) {
	pos, err := f.field(table, slot)
	if err != nil || pos == 0 {
		return nil, err
	}
	start, n, err := f.vector(pos, 4)
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	for i := range out {
		u, err := f.u32(start + 4*int64(i))
		if err != nil {
			return nil, err
		}
		out[i] = int32(u)
	}
	return out, nil
}

// elements is a shape's element count; unknown (-1) dims count as 1.
func elements(shape []int32) int64 {
	n := int64(1)
	for _, d := range shape {
		n = satMul(n, max(int64(d), 1))
	}
	return n
}

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > maxWork/b {
		return maxWork
	}
	return a * b
}

func satAdd(a, b int64) int64 { return min(a+b, maxWork) }
