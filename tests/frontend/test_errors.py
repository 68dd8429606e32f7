"""The catalogue of bad specs: each one and the exact message a user sees.

Every message is ``file:line:col: kind: message``, the source line, a caret under the
offending text, and a ``hint:`` where one helps.  A change to any of these texts is a change
users see: update the case and say why.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from netlang.errors import SpecError, SpecWarning
from netlang.frontend import load_spec


@dataclass(frozen=True)
class Case:
    name: str
    spec: str
    message: str


CASES = [
    Case("syntax_expected_expression", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(image) + )
}
""", """\
bad.net:4:21: syntax error: unexpected ')', expected an expression
      h = relu(image) + )
                        ^"""),
    Case("syntax_unclosed_parenthesis", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(image
  output y = h
}
""", """\
bad.net:5:3: syntax error: unexpected 'output', expected an operator, ',', '=', '(' or ')'
      output y = h
      ^^^^^^
hint: the '(' at line 4, column 11 is never closed: add ')'"""),
    Case("syntax_misspelled_keyword", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  ouptut y = relu(image)
}
""", """\
bad.net:4:10: syntax error: unexpected name 'y', expected '='
      ouptut y = relu(image)
             ^
hint: did you mean 'output'?"""),
    Case("syntax_two_statements_on_a_line", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  a = relu(image) b = a
}
""", """\
bad.net:4:19: syntax error: unexpected name 'b', expected an operator, '}' or a newline
      a = relu(image) b = a
                      ^
hint: one statement per line (or separate them with ';')"""),
    Case("syntax_input_without_type", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  input x = 1
}
""", """\
bad.net:4:11: syntax error: unexpected '=', expected ':'
      input x = 1
              ^
hint: an input needs a type after ':', as in: input x: f32[N, 784]"""),
    Case("syntax_unexpected_character", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image $ 2
}
""", """\
bad.net:4:13: syntax error: unexpected character '$'
      h = image $ 2
                ^"""),
    Case("syntax_non_ascii_name", """\
network n {
  input x: f32[N, 4]   # comments may say anything: é
  hé = relu(x)
  output y = hé
}
""", """\
bad.net:3:4: syntax error: unexpected character 'é'
      hé = relu(x)
       ^
hint: names are ASCII letters, digits and '_' (not starting with a digit); other characters \
may appear only in comments and strings"""),
    Case("syntax_unclosed_brace", """\
network n {
  input x: f32[N, 2]
  output y = relu(x)
""", """\
bad.net:3:21: syntax error: unexpected end of file, expected a statement, 'on' or '}'
      output y = relu(x)
                        ^
hint: a '{' is never closed: add '}'"""),
    Case("syntax_statement_outside_network", """\
h = 1
network n {
}
""", """\
bad.net:1:1: syntax error: unexpected name 'h', expected 'network', 'block' or 'train'
    h = 1
    ^
hint: statements go inside 'network NAME { ... }', 'block NAME(...) { ... }' or 'train NAME { ... }'"""),
    Case("unknown_op", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relux(image)
}
""", """\
bad.net:4:7: name error: unknown op 'relux'
      h = relux(image)
          ^^^^^
hint: did you mean 'relu'?"""),
    Case("unknown_name", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(imgae)
}
""", """\
bad.net:4:12: name error: unknown name 'imgae'
      h = relu(imgae)
               ^^^^^
hint: did you mean 'image'?"""),
    Case("used_before_defined", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(g)
  g = image
}
""", """\
bad.net:4:12: name error: 'g' is used before it is defined (line 5)
      h = relu(g)
               ^
hint: move the definition above its first use"""),
    Case("name_defined_twice", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(image)
  h = image |> maxpool(2)
}
""", """\
bad.net:5:3: name error: 'h' is already defined (line 4)
      h = image |> maxpool(2)
      ^
hint: names are single-assignment: give the new value another name"""),
    Case("output_never_defined", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = relu(image)
  output probs
}
""", """\
bad.net:5:10: name error: output 'probs' is never defined
      output probs
             ^^^^^
hint: define it: output probs = ..."""),
    Case("unknown_dtype", """\
network n {
  input x: float32[N, 2]
  output y = relu(x)
}
""", """\
bad.net:2:12: name error: unknown dtype 'float32'
      input x: float32[N, 2]
               ^^^^^^^
hint: write f32"""),
    Case("unknown_argument", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> conv2d(8, kernal=3)
}
""", """\
bad.net:4:26: argument error: conv2d has no argument 'kernal'
      h = image |> conv2d(8, kernal=3)
                             ^^^^^^^^
hint: did you mean 'kernel'?"""),
    Case("missing_argument", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> conv2d(8)
}
""", """\
bad.net:4:16: argument error: conv2d needs the argument 'kernel'
      h = image |> conv2d(8)
                   ^^^^^^^^^
hint: conv2d(x, filters, kernel, stride=1, padding=valid, dilation=1, activation=None, use_bias=true, init=glorot_uniform, bias_init=zeros, groups=1, name=None, share=None, trainable=true)"""),
    Case("duplicate_argument", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> conv2d(8, kernel=3, kernel=5)
}
""", """\
bad.net:4:36: argument error: conv2d got the argument 'kernel' twice
      h = image |> conv2d(8, kernel=3, kernel=5)
                                       ^^^^^^^^"""),
    Case("too_many_arguments", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> maxpool(2, 2, valid, 7)
}
""", """\
bad.net:4:37: argument error: too many positional arguments for maxpool
      h = image |> maxpool(2, 2, valid, 7)
                                        ^
hint: maxpool(x, window=2, stride=None, padding=valid, ceil_mode=false, dilation=1, name=None)"""),
    Case("wrong_argument_type", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> conv2d(8.5, kernel=3)
}
""", """\
bad.net:4:23: argument error: conv2d: 'filters' must be a positive integer, got the number 8.5
      h = image |> conv2d(8.5, kernel=3)
                          ^^^"""),
    Case("wrong_choice", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> conv2d(8, kernel=3, padding=vaild)
}
""", """\
bad.net:4:36: argument error: conv2d: 'padding' must be valid or same, got the name 'vaild'
      h = image |> conv2d(8, kernel=3, padding=vaild)
                                       ^^^^^^^^^^^^^
hint: did you mean 'valid'?"""),
    Case("op_needs_more_inputs", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = softmax_cross_entropy(image)
}
""", """\
bad.net:4:7: argument error: softmax_cross_entropy takes 2 tensor input(s), got 1
      h = softmax_cross_entropy(image)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: softmax_cross_entropy(x1, x2)"""),
    Case("tensor_exponent", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image ** image
}
""", """\
bad.net:4:16: argument error: the exponent of ** must be a constant number
      h = image ** image
                   ^^^^^
hint: use exp(y * log(x)) for a tensor power"""),
    Case("dense_on_4d_input", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> dense(10)
}
""", """\
bad.net:4:16: shape error: dense expects a 2-D input [N, features], got f32[N,28,28,1]
      h = image |> dense(10)
                   ^^^^^^^^^
hint: add flatten before dense?"""),
    Case("conv_channel_mismatch", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  param W: f32[5, 5, 3, 32] = glorot_uniform()
  h = conv2d(image, W, padding=same)
}
""", """\
bad.net:5:7: shape error: conv2d: the input has 1 channel(s) but the kernel f32[5,5,3,32] expects 3
      h = conv2d(image, W, padding=same)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: a conv2d kernel is [kh, kw, in, out]; its in-channels must match the input's last dim"""),
    Case("conv_on_2d_input", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> flatten |> conv2d(8, kernel=3)
}
""", """\
bad.net:4:27: shape error: conv2d expects a 4-D input [N,H,W,C], got f32[N,784]
      h = image |> flatten |> conv2d(8, kernel=3)
                              ^^^^^^^^^^^^^^^^^^^
hint: reshape to [N, H, W, C] first (NHWC)"""),
    Case("not_broadcastable", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = flatten(image) + label
}
""", """\
bad.net:4:7: shape error: add: shapes f32[N,784] and i32[N] do not broadcast
      h = flatten(image) + label
          ^^^^^^^^^^^^^^^^^^^^^^
hint: dims must be equal or 1, compared from the right (NumPy broadcasting)"""),
    Case("loss_not_scalar", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  loss = softmax_cross_entropy(image |> flatten |> dense(10), label)
}
""", """\
bad.net:4:10: shape error: the loss must be a float scalar, got f32[N]
      loss = softmax_cross_entropy(image |> flatten |> dense(10), label)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: reduce it, for example with mean(...)"""),
    Case("share_unknown_scope", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> flatten |> dense(10, share=fc1)
}
""", """\
bad.net:4:27: name error: share=fc1: no earlier layer or block is named 'fc1'
      h = image |> flatten |> dense(10, share=fc1)
                              ^^^^^^^^^^^^^^^^^^^^
hint: share names the scope of an earlier layer: conv1, dense2, or its name="""),
    Case("share_shape_mismatch", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  a = image |> flatten |> dense(10, name=fc1)
  b = image |> flatten |> dense(5, share=fc1)
}
""", """\
bad.net:5:27: shape error: share=fc1: 'fc1/W' is f32[784,10] but this use needs f32[784,5]
      b = image |> flatten |> dense(5, share=fc1)
                              ^^^^^^^^^^^^^^^^^^^
hint: shared parameters need inputs of the same shape"""),
    Case("layer_name_taken", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  a = image |> flatten |> dense(10, name=fc1)
  b = image |> flatten |> dense(10, name=fc1)
}
""", """\
bad.net:5:27: name error: a layer named 'fc1' already exists (line 4)
      b = image |> flatten |> dense(10, name=fc1)
                              ^^^^^^^^^^^^^^^^^^^
hint: use share=fc1 to reuse its parameters, or pick another name"""),
    Case("block_sees_only_its_arguments", """\
block head(x) {
  return (x |> flatten |> dense(10)) + label
}
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = head(image)
}
""", """\
bad.net:2:40: name error: unknown name 'label'
      return (x |> flatten |> dense(10)) + label
                                           ^^^^^
hint: a block sees only its parameters and its own names: pass 'label' to block 'head' as an argument; in block 'head', used at bad.net:7:7 as head1"""),
    Case("block_without_return", """\
block head(x) {
  y = relu(x)
}
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = head(image)
}
""", """\
bad.net:1:1: error: block 'head' must end with 'return EXPR'
    block head(x) {
    ^
hint: in block 'head', used at bad.net:7:7 as head1"""),
    Case("block_uses_itself", """\
block loop(x) {
  return loop(x)
}
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = loop(image)
}
""", """\
bad.net:2:10: name error: block 'loop' uses itself
      return loop(x)
             ^^^^^^^
hint: blocks are inlined, so they cannot be recursive; in block 'loop', used at bad.net:7:7 as loop1"""),
    Case("train_unknown_setting", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train n {
  epoch 3
}
""", """\
bad.net:7:3: name error: unknown train setting 'epoch'
      epoch 3
      ^^^^^
hint: did you mean 'epochs'?"""),
    Case("train_unknown_optimizer", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train n {
  optimizer adma(lr=1e-3)
}
""", """\
bad.net:7:13: name error: unknown optimizer 'adma'
      optimizer adma(lr=1e-3)
                ^^^^
hint: did you mean 'adam'?"""),
    Case("train_unknown_argument", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train n {
  optimizer adam(learning_rate=1e-3)
}
""", """\
bad.net:7:18: argument error: adam has no argument 'learning_rate'
      optimizer adam(learning_rate=1e-3)
                     ^^^^^^^^^^^^^^^^^^
hint: adam(lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08)"""),
    Case("train_wrong_value", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train n {
  batch 6.4
}
""", """\
bad.net:7:9: argument error: batch must be a positive integer, got the number 6.4
      batch 6.4
            ^^^"""),
    Case("train_setting_twice", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train n {
  batch 64
  batch 32
}
""", """\
bad.net:8:3: error: train setting 'batch' is given twice (line 7)
      batch 32
      ^^^^^"""),
    Case("train_names_no_network", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output y = relu(image)
}
train mnist {
  batch 64
}
""", """\
bad.net:6:1: name error: train section 'mnist' names no network
    train mnist {
    ^
hint: the network is 'n': train n {"""),
    Case("syntax_pipeline_then_operator", """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  h = image |> flatten + 1
}
""", """\
bad.net:4:24: syntax error: unexpected '+', expected '(', '}', '|>' or a newline
      h = image |> flatten + 1
                           ^
hint: a pipeline is the loosest operation: write (x |> f) + y"""),
    Case("shape_symbolic_kernel_size", """\
network n {
  input x: f32[N, 8, 8, 2]
  input w: f32[K, 3, 2, 2]
  output y = conv2d(x, w)
}
""", """\
bad.net:4:14: shape error: conv2d needs a known kernel height and width, got [K,3]
      output y = conv2d(x, w)
                 ^^^^^^^^^^^^
hint: give the filter's first two dims as numbers, e.g. f32[3,3,1,32]"""),
    Case("shape_symbolic_transpose_kernel_size", """\
network n {
  input x: f32[N, 8, 8, 2]
  input w: f32[2, K, 2, 2]
  output y = x |> conv2d_transpose(w, stride=2)
}
""", """\
bad.net:4:19: shape error: conv2d_transpose needs a known kernel height and width, got [2,K]
      output y = x |> conv2d_transpose(w, stride=2)
                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: give the filter's first two dims as numbers, e.g. f32[3,3,1,32]"""),
    Case("shape_negating_a_bool", """\
network n {
  input mask: bool[N, 4]
  output y = -mask
}
""", """\
bad.net:3:14: shape error: neg (unary -) is not defined on bool tensors, got bool[N,4]
      output y = -mask
                 ^^^^^
hint: cast(x, dtype=i32) first to count true as 1 and false as 0"""),
    Case("shape_subtracting_bools", """\
network n {
  input a: bool[N, 4]
  input b: bool[4]
  output y = a - b
}
""", """\
bad.net:4:14: shape error: sub (a - b of two bools) is not defined on bool tensors, got bool[N,4]
      output y = a - b
                 ^^^^^
hint: cast(x, dtype=i32) first to count true as 1 and false as 0"""),
    Case("shape_sign_of_a_bool", """\
network n {
  input a: bool[N, 4]
  output y = sign(a)
}
""", """\
bad.net:3:14: shape error: sign (the sign of a number) is not defined on bool tensors, got bool[N,4]
      output y = sign(a)
                 ^^^^^^^
hint: cast(x, dtype=i32) first to count true as 1 and false as 0"""),
    Case("shape_value_too_large_to_index", """\
network n {
  input x: f32[N, 99999999999999999999]
  output y = x
}
""", """\
bad.net:2:3: shape error: f32[N,99999999999999999999] is too large to compute: 4e+20 bytes per \
example, more than the 9.22e+18 NumPy can index
      input x: f32[N, 99999999999999999999]
      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: check the sizes: a dim this large is most likely a typo"""),
    Case("argument_window_too_large", """\
network n {
  input x: f32[N, 8, 8, 2]
  output y = maxpool(x, 2147483648, padding=same)
}
""", """\
bad.net:3:14: argument error: maxpool: window must be at most 2147483647, got \
(2147483648, 2147483648)
      output y = maxpool(x, 2147483648, padding=same)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"""),
    Case("argument_stride_too_large", """\
network n {
  input x: f32[N, 8, 8, 2]
  output y = conv2d(x, 4, kernel=2, stride=100000000000000000000)
}
""", """\
bad.net:3:14: argument error: conv2d: stride must be at most 2147483647, got \
(100000000000000000000, 100000000000000000000)
      output y = conv2d(x, 4, kernel=2, stride=100000000000000000000)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"""),
    Case("shape_same_padding_beyond_indexing", """\
network n {
  input x: f32[N, 8, 8, 2]
  output y = maxpool(x, 100000, padding=same)
}
""", """\
bad.net:3:14: shape error: maxpool: padding=SAME pads the 8x8 input to 100000x100000, more \
than the 2147483647 cells a kernel can index
      output y = maxpool(x, 100000, padding=same)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: use a window no larger than the input, or padding=VALID"""),
    Case("argument_assign_to_an_input", """\
network n {
  input y: f32[]
  output d = assign(y, y + 1)
}
""", """\
bad.net:3:21: argument error: assign: the first argument must be a param (a variable), got \
the input 'y'
      output d = assign(y, y + 1)
                        ^
hint: declare it with param, e.g. param x: i32[] = 100"""),
    Case("shape_assign_of_another_shape", """\
network n {
  param x: f32[2] = 0
  output e = assign(x, [1.0, 2.0, 3.0])
}
""", """\
bad.net:3:14: shape error: assign: the new value of 'x' is f32[3], but 'x' is f32[2]
      output e = assign(x, [1.0, 2.0, 3.0])
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^
hint: an assignment keeps the variable's type; cast or reshape the value"""),
    Case("shape_literal_param_with_ragged_rows", """\
network n {
  param I: f32[2,2] = [[1,0],[0,1,2]]
  output I
}
""", """\
bad.net:2:23: shape error: the value of 'I' has rows of different lengths
      param I: f32[2,2] = [[1,0],[0,1,2]]
                          ^^^^^^^^^^^^^^^
hint: every row of a literal has as many numbers"""),
    Case("shape_literal_param_of_another_shape", """\
network n {
  param I: f32[2,2] = [[1,0],[0,1],[1,1]]
  output I
}
""", """\
bad.net:2:23: shape error: the value of 'I' is shaped [3,2], but 'I' is f32[2,2]
      param I: f32[2,2] = [[1,0],[0,1],[1,1]]
                          ^^^^^^^^^^^^^^^^^^^
hint: give one number, or a nested list of the declared shape"""),
    Case("argument_integer_param_with_a_fraction", """\
network n {
  param k: i32[2] = [1, 1.5]
  output k
}
""", """\
bad.net:2:21: argument error: 'k' is i32[2] but its value holds 1.5
      param k: i32[2] = [1, 1.5]
                        ^^^^^^^^
hint: an integer param takes whole numbers"""),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_spec_reports_exactly(case):
    with pytest.raises(SpecError) as info:
        load_spec(case.spec, "bad.net")
    assert str(info.value) == case.message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_error_points_into_the_spec(case):
    with pytest.raises(SpecError) as info:
        load_spec(case.spec, "bad.net")
    span = info.value.span
    assert span is not None and span.source.path == "bad.net"
    assert 1 <= span.line <= len(case.spec.splitlines())


UNUSED_INPUT = """\
network n {
  input image: f32[N, 28, 28, 1]
  input label: i32[N]
  output probs = image |> flatten |> dense(10) |> softmax
}
"""


def test_unused_input_is_a_warning_not_an_error():
    graph = load_spec(UNUSED_INPUT, "warn.net")
    warnings = graph.spec.warnings
    assert [type(w) for w in warnings] == [SpecWarning]
    assert str(warnings[0]) == """\
warn.net:3:9: warning: input 'label' is never used
      input label: i32[N]
            ^^^^^
hint: remove it, or use it in an output, the loss or a metric"""


def test_an_input_that_is_only_an_output_is_used():
    graph = load_spec("network n {\n  input x: f32[N]\n  output x\n}\n", "ok.net")
    assert graph.spec.warnings == []
