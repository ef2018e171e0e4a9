"""Op-level counting, scoped to the modules that need it: functional ops, attention products, weights as used.

The counter's module hooks see ``nn.Linear`` / ``nn.ConvNd`` calls. What they
cannot see -- ``F.linear`` / ``F.conv2d`` / ``x @ w`` inside a ``forward``, the
``q @ k^T`` and ``attn @ v`` products of self-attention, the in- and
out-projections of ``nn.MultiheadAttention``, a weight masked or
fake-quantised inside ``forward`` -- is counted here, op by op, with the
definitions of :mod:`synopsloss.ops` (weight ops exactly as the module rules;
activation x activation products as ``|A| @ |B|``, gradients to both operands).

Mechanism
---------
A ``torch.overrides.TorchFunctionMode`` sees every op at the Python API level,
but an empty mode around a whole training step already costs 5-19 % on CPU.
So the mode is pushed only *inside the forward of the modules that need it*
(a forward pre-hook pushes it, a forward hook registered with
``always_call=True`` pops it, so an exception pops it too); everything else
keeps the module hooks, and a model where no module needs it gets no extra hook
at all. One mode object serves every counter in the process and stays pushed
while any of them counts, so two counters on one model keep the mode stack
balanced (one forward at a time: the mode stack is per thread). The modules that need it are chosen when the counter attaches
(:class:`OpScope`, ``SynOpsCounter(..., ops=)``):

``ops="auto"`` (default):

1. types in :data:`synopsloss.registry.OP_SCOPED` (``nn.MultiheadAttention``,
   ``nn.Transformer*``, SpikingJelly's ``SpikingSelfAttention``);
2. modules with their own parameters that no synapse rule covers and whose
   class (outside ``torch``) passes a parameter to a call (``F.linear(x,
   self.w * self.mask)``, norse's ``self.activation(x, s, self.input_weights)``)
   or calls a counted op; a parameter used only in arithmetic
   (``x * self.gain``) cannot be counted and is named at attach, as before.
   Parameters that the class only adds to an activation or joins with one
   (``x + self.pos_embed``, ``torch.cat([self.cls_token.expand(B, -1, -1),
   x], 1)``, through views and broadcasts: :attr:`ClassCode.additive`) are no
   synapses: such a module is neither scoped nor named;
3. modules with a map rule (``nn.Linear`` / ``nn.ConvNd`` subclasses) whose
   class overrides ``forward`` (QAT, hand-rolled pruning: the weight the op
   receives is counted, not ``.weight``), except the types in
   :data:`synopsloss.registry.RULE_FORWARD_AS_IS` (SpikingJelly's
   ``layer.ConvNd``, whose ``forward`` only folds time into the batch); their
   module hook is then not registered;
4. modules whose class (outside ``torch``) runs a counted op in
   its own code: ``@``, or a call of ``matmul``, ``bmm``, ``einsum``,
   ``linear``, ``conv2d``, ``scaled_dot_product_attention``, ... (found in the
   class' source with :mod:`ast` when the counter attaches; a call of a child
   module, ``self.linear(x)``, does not count). Neuron modules too (snntorch's
   ``AssociativeLeaky``: ``einsum`` and ``bmm`` of its projections), except
   the types of :data:`synopsloss.registry.NEURON_OPS_NO_SYNAPSE` (SpikingJelly's
   ``PSN``, whose weight mixes one neuron's time steps); neurons whose code runs
   no such op (almost all) get no frame of their own.

``ops="all"``: the whole model's forward (every module gets a frame, so ops are
attributed to the innermost module). ``ops="none"``: module hooks only.

Inside a scoped module, a descendant that is counted by its own module hook
(an ``nn.Linear`` child called as a module) pops the mode while it runs, so its
op is not counted twice; so do neuron modules without parameters (they run no
counted op, and their many elementwise ops then skip the mode). The mode is
pushed before the outermost ``MultiheadAttention`` / ``Transformer*`` forward
starts, so their fused fast paths (which check ``has_torch_function``) are not
taken; ``F.multi_head_attention_forward`` runs as
:data:`synopsloss.ops.TRANSPARENT_OPS` with the mode re-entered, so its
projections and products are each counted. ``count_op`` always runs with the
mode popped (``__torch_function__`` pops it). A module that is called from a
scoped module but lives outside its subtree (a shared layer) has no frame
there: its op would be counted by both paths. Keep shared layers inside.

Rows
----
One row per (module, op occurrence): the ``k``-th call of an op in one forward
call of module ``blocks.0.attn`` is row ``blocks.0.attn.matmul`` (``k = 0``),
``blocks.0.attn.matmul.1``, ... (stable across calls and time steps while the
forward takes the same path). The root's rows are the op names. Exceptions,
so that a table reads like the model:

* a weight op whose weight operand *is* a parameter of a layer with a rule
  (``nn.MultiheadAttention.out_proj``, never called as a module: its weight is
  passed to ``F.multi_head_attention_forward``) goes to that layer's row;
* a weight op inside a rule-(3) module (QAT ``Linear``) goes to the module's
  own row.

:class:`OpRow` records each op row's op name (the table's ``type``: ``matmul``,
``conv2d``, ``sdpa.qk``) and kind (:attr:`~synopsloss.registry.LayerKind.SYNAPTIC`
for weight ops, :attr:`~synopsloss.registry.LayerKind.PRODUCT` for
activation x activation products). Rows take part in the counter's samples
check like layers: a product's rows are its batch dims (``T * B * heads`` for
Spikformer's attention), a weight op's rows are its input rows.

Which operand is a weight
-------------------------
:mod:`synopsloss.ops` asks ``is_weight(t)``. Here it is True for tensors whose
storage is one of the model's parameters (re-read when the parameters move;
a buffer is no weight on its own: buffers hold state as well, such as the
last step's spikes), and, when autograd records the forward, for tensors
computed from parameters by elementwise, view and reduction ops (``w * mask``
with a mask buffer, ``fake_quantize(w)``, ``(w - w.mean()) / w.std()``): the
autograd graph is walked (at most :data:`MAX_WALK` nodes; a node outside
:data:`WEIGHT_PREP_NODES` or an input that is not a parameter, a buffer (of a
module other than a neuron) or a scalar stops it, and at least one parameter
must be reached). In every grad mode the function mode also follows what a
counting frame computes from parameters, buffers and scalars alone
(:meth:`OpScope._follow`): ``w * 2``, ``w * (w.abs() > t)``,
``torch.where(w.abs() > t, w, 0.)``, whose scalars and masks autograd's record
does not show, are weights with gradients as without.

Never a silent zero
-------------------
When the counts are read (:meth:`OpScope.silent`): a layer with a rule that
neither ran as a module nor had its weight used by a counted op, and a scoped
module with parameters none of which a counted op used (and in whose forward
no weight op was counted), are named in a warning (``strict=True``: an error
for the latter). Ops in :data:`synopsloss.ops.FLAGGED_OPS` (``F.bilinear``,
sparse products, the fused attention kernels called directly, ...) are named
once with the module that ran them (``strict=True``: an error). Submodules
compiled with ``torch.compile`` before the counter attached are named at
attach. Not corrected on the op path: the AvgPool spike-event correction
(apply it with module layers).

Cost
----
Plain module models: no change (no extra hook). Inside a scoped module each op
pays one Python call (a dict lookup for ops that are not counted), and each
counted op what :func:`synopsloss.ops.count_op` costs. Nothing synchronises
with the device.

Example
-------
>>> import torch, synopsloss as sl
>>> class Attn(torch.nn.Module):
...     def forward(self, q, k):
...         return q @ k.transpose(-2, -1)
>>> class Net(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc = torch.nn.Linear(2, 2, bias=False)
...         self.attn = Attn()
...     def forward(self, x):
...         q = self.fc(x)
...         return self.attn(q, x)
>>> net = Net()
>>> counter = sl.SynOpsCounter(net, neurons=False, batch_size=1)
>>> _ = net(torch.ones(1, 3, 2))  # one sample of 3 tokens
>>> snap = counter.snapshot()
>>> list(snap.layers), snap.layers["attn.matmul"].kind, snap.layers["attn.matmul"].dense
(['fc', 'attn.matmul'], 'activation product', 18.0)
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import sys
import threading
import textwrap
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from . import registry
from .errors import UnsupportedLayerWarning
from .hooks import COMPILED, OWN, compiling as _DYNAMO, HookSet, PackageMode, installed, made_by_package, take_off
from .maps import OpCounts, Rule
from .ops import COUNTED_OPS, FLAGGED_OPS, TRANSPARENT_OPS, OpCount, UncountableOpError, record_op
from .records import view_lead

__all__ = ["OpScope", "OpRow", "OPS_MODES", "WEIGHT_PREP_NODES", "MAX_WALK", "class_code"]

#: Values of ``SynOpsCounter(ops=...)``.
OPS_MODES = ("auto", "all", "none")

#: Most autograd nodes walked to decide whether a tensor was computed from parameters only.
MAX_WALK = 32
#: tensors computed from parameters without gradients that one forward follows (a weight per op is a handful)
MAX_MADE = 4096

#: Autograd node types of weight preprocessing: elementwise, view and reduction ops (a masked,
#: fake-quantised or standardised weight). A matmul, convolution, embedding, a custom Function or any
#: other node means the tensor may depend on data: it is not a weight.
WEIGHT_PREP_NODES: FrozenSet[str] = frozenset(
    f"{name}Backward{i}" for name in (
        "Mul", "Div", "Add", "Sub", "Neg", "Abs", "Sign", "Round", "Clamp", "ClampMin", "ClampMax", "Hardtanh",
        "Where", "MaskedFill", "T", "Transpose", "Permute", "View", "UnsafeView", "ReshapeAlias", "Expand",
        "Squeeze", "Unsqueeze", "Clone", "ToCopy", "Slice", "Select", "Split", "SplitWithSizes", "Unbind",
        "Mean", "Sum", "Std", "Var", "VarMean", "StdMean", "Sqrt", "Rsqrt", "Pow", "Exp", "Tanh", "Sigmoid",
        "Reciprocal", "Floor", "Ceil", "Trunc", "Alias", "Flip", "Roll", "Contiguous", "Cat", "Stack",
        "FakeQuantizePerTensorAffineCachemask", "FakeQuantizePerChannelAffineCachemask",
        "_FakeQuantizePerTensorAffineCachemaskTensorQparams", "Norm", "LinalgVectorNorm", "Max", "Amax",
    ) for i in range(4)
)

#: Names whose call counts synapses (the attribute or function name of ``F.linear``, ``x.matmul``, ...).
_COUNTED_NAMES = frozenset({
    "matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr", "mv", "dot", "vdot", "inner", "outer",
    "ger", "einsum", "tensordot", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "convolution", "scaled_dot_product_attention", "multi_head_attention_forward",
})
_SKIP_METHODS = frozenset({"__init__", "extra_repr", "reset_parameters", "_reset_parameters", "__repr__"})
_WATCHED = frozenset(COUNTED_OPS) | frozenset(FLAGGED_OPS) | frozenset(TRANSPARENT_OPS)


@dataclass(frozen=True)
class OpRow:
    """An op row of the table: the op (``LayerStats.type``), its kind and the module whose forward ran it."""

    op: str
    kind: registry.LayerKind
    module: str


@dataclass(frozen=True)
class ClassCode:
    """What a class' own methods (outside ``torch``) do, read from their source with :mod:`ast`.

    ``counted_self_calls``: names ``X`` of ``self.X(...)`` calls that look like counted ops (a child
    module named ``linear`` is one, so they are checked against the instance's children).
    """

    counted: bool  # ``@`` or a call of a counted op other than ``self.X(...)``
    counted_self_calls: FrozenSet[str]
    passed: FrozenSet[str]  # ``X`` of every ``self.X`` inside a call's arguments
    #: ``X`` of attributes only ever added to, subtracted from or concatenated with an activation (through views
    #: and broadcasts): ``x + self.pos_embed``, ``torch.cat([self.cls_token.expand(B, -1, -1), x], 1)``
    additive: FrozenSet[str] = frozenset()
    calls: FrozenSet[str] = frozenset()  # names of every call (``F.avg_pool2d(...)``: ``avg_pool2d``)
    #: ``(X, Y)`` of every ``self.X.Y(...)`` call other than ``forward``: a child's method called by its parent
    #: (``self.backbone.forward_features(x)``), whose ops run in the parent's forward, not in the child's
    child_methods: FrozenSet[Tuple[str, str]] = frozenset()


_CLASS_CODE: "weakref.WeakKeyDictionary[type, Optional[ClassCode]]" = weakref.WeakKeyDictionary()


def class_code(cls: type) -> Optional[ClassCode]:
    """:class:`ClassCode` of ``cls`` and its bases up to the first ``torch`` class; ``None`` if unreadable.

    Example
    -------
    >>> import torch
    >>> class Gain(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x @ self.w
    >>> class_code(Gain).counted
    True
    """
    if cls in _CLASS_CODE:
        return _CLASS_CODE[cls]
    code = _read_class(cls)
    _CLASS_CODE[cls] = code
    return code


#: Calls that join tensors (an attribute among their arguments is joined with the others, no synapse).
_JOIN_CALLS = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack", "add", "sub", "subtract"})
#: Calls that only view, broadcast, copy or cast their tensor (as methods or functions).
_SHAPE_CALLS = frozenset({
    "expand", "expand_as", "repeat", "tile", "reshape", "view", "view_as", "unsqueeze", "squeeze", "flatten",
    "permute", "transpose", "contiguous", "clone", "to", "type_as", "narrow", "broadcast_to",
})


def _has_activation_name(node: ast.AST) -> bool:
    """Whether ``node`` reads a local name (an activation, as far as the source tells) besides ``self``."""
    return any(isinstance(n, ast.Name) and n.id != "self" for n in ast.walk(node))


def _is_matmul(node: ast.AST) -> bool:
    """Whether ``node`` is an ``a @ b`` (or ``a @= b``)."""
    return isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult)


def _call_name(call: ast.Call) -> Optional[str]:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _additive_use(node: ast.Attribute, parents: Dict[int, ast.AST]) -> Optional[bool]:
    """How one ``self.X`` read is used: True when it is only added to / joined with an activation (through
    views and broadcasts), None when only its metadata is read (``self.X.shape``), False otherwise."""
    cur: ast.AST = node
    mixed = False
    while True:
        parent = parents.get(id(cur))
        if isinstance(parent, ast.Attribute) and parent.value is cur:
            call = parents.get(id(parent))
            if isinstance(call, ast.Call) and call.func is parent and parent.attr in _SHAPE_CALLS:
                cur = call
                continue
            if isinstance(call, ast.Call) and call.func is parent and parent.attr in ("add", "sub"):
                mixed = mixed or any(_has_activation_name(a) for a in call.args)
                cur = call
                continue
            return None if parent.attr in ("shape", "size", "dtype", "device", "ndim", "dim") else False
        if isinstance(parent, ast.Subscript) and parent.value is cur:
            cur = parent
        elif isinstance(parent, ast.BinOp) and isinstance(parent.op, (ast.Add, ast.Sub)):
            other = parent.right if parent.left is cur else parent.left
            mixed = mixed or _has_activation_name(other)
            cur = parent
        elif isinstance(parent, ast.AugAssign) and parent.value is cur and isinstance(parent.op, (ast.Add, ast.Sub)):
            return mixed or _has_activation_name(parent.target)
        elif isinstance(parent, (ast.List, ast.Tuple)):
            mixed = mixed or any(_has_activation_name(e) for e in parent.elts if e is not cur)
            cur = parent
        elif isinstance(parent, (ast.Starred, ast.keyword)):
            cur = parent
        elif isinstance(parent, ast.Call) and parent.func is not cur:
            name = _call_name(parent)
            if name in _JOIN_CALLS:
                mixed = mixed or any(_has_activation_name(a) for a in parent.args if a is not cur)
            elif name not in _SHAPE_CALLS:
                return False
            cur = parent
        elif isinstance(parent, (ast.Assign, ast.AnnAssign, ast.Return, ast.Expr)):
            return mixed
        else:
            return False


def _read_class(cls: type) -> Optional[ClassCode]:
    counted, self_calls, passed, calls, child_methods = False, set(), set(), set(), set()
    uses: Dict[str, Set[Optional[bool]]] = {}
    for klass in cls.__mro__:
        if (getattr(klass, "__module__", "") == "torch.nn.utils.parametrize"
                and not _is_torch_class(klass)):
            continue  # (a parametrized module's class, made by torch: its own code is the next class's)
        if klass is object or _is_torch_class(klass):
            break
        for attr, value in vars(klass).items():
            fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if attr in _SKIP_METHODS or not inspect.isfunction(fn):
                continue
            try:  # method by method: a class typed in a notebook or doctest has no class source, its methods do
                tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
            except (OSError, TypeError, SyntaxError, IndentationError):
                return None
            parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            code = getattr(fn, "__code__", None)
            me = code.co_varnames[0] if code is not None and code.co_argcount else "self"  # (``def forward(s, x)``)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == me
                        and isinstance(node.ctx, ast.Load)):
                    uses.setdefault(node.attr, set()).add(_additive_use(node, parents))
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                    calls.add("__getitem__")  # (an index of a tensor may copy it: the pools follow it)
                if _is_matmul(node):
                    counted = True
                elif isinstance(node, ast.Call):
                    f = node.func
                    name = _call_name(node)
                    if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute)
                            and isinstance(f.value.value, ast.Name) and f.value.value.id == me
                            and f.attr not in ("forward", "__call__")):
                        child_methods.add((f.value.attr, f.attr))
                    if name is not None:
                        calls.add(name)
                    if name in _COUNTED_NAMES:
                        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == me:
                            self_calls.add(name)
                        else:
                            counted = True
                    for arg in list(node.args) + [k.value for k in node.keywords]:
                        for sub in ast.walk(arg):
                            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                                    and sub.value.id == me):
                                passed.add(sub.attr)
            more_counted, more_calls = _reached_code(fn, tree, 0, set())
            counted = counted or more_counted
            calls |= more_calls
    additive = frozenset(a for a, u in uses.items() if True in u and False not in u)
    return ClassCode(counted, frozenset(self_calls), frozenset(passed), additive, frozenset(calls),
                     frozenset(child_methods))


#: how deep :func:`_reached_code` follows functions called from a class' methods
_HELPER_DEPTH = 8

def _resolve(node: ast.AST, scope: Dict[str, Any]) -> Any:
    """The object a ``Name`` or ``module.attr`` expression names in a function's globals (``None`` if unknown)."""
    if isinstance(node, ast.Name):
        return scope.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in scope:
        return getattr(scope[node.value.id], node.attr, None)
    return None


def _unwrapped(obj: Any) -> Any:
    """What a partial, a bound method, a decorated function or a custom autograd function's ``apply`` runs."""
    for _ in range(8):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif inspect.ismethod(obj):
            owner = obj.__self__
            if (isinstance(owner, type) and issubclass(owner, torch.autograd.Function)
                    and owner.forward is not torch.autograd.Function.forward):
                obj = owner.forward  # SpikeMM.apply(q, k): its forward runs the product
            else:
                obj = obj.__func__
        elif getattr(obj, "__wrapped__", None) is not None:
            obj = obj.__wrapped__
        else:
            break
    return obj


def _callable_counts(obj: Any) -> bool:
    """Whether a callable a module holds as an attribute (a lambda, a partial, a helper object with ``__call__``)
    runs a counted op: by its own name (``functools.partial(torch.matmul)``) or in its code."""
    obj = _unwrapped(obj)
    if not inspect.isfunction(obj) and not isinstance(obj, type) and callable(obj) and not isinstance(obj, nn.Module):
        call = getattr(type(obj), "__call__", None)
        if inspect.isfunction(call):  # an instance of the user's class: its __call__
            obj = call
    if not inspect.isfunction(obj):
        return getattr(obj, "__name__", None) in _COUNTED_NAMES
    if installed(obj.__code__.co_filename):
        return (obj.__name__ in _COUNTED_NAMES) and (obj.__module__ or "").startswith("torch")
    found = _function_code(obj, 0, set())
    return found is not None and found[0]


def _parsed(fn: Any) -> Optional[ast.AST]:
    """The syntax tree of a function's source; for a lambda written inside a larger expression (a value of a dict
    literal: ``"dot": lambda q, k: q @ k.T,``), the lambda's own text; ``None`` when it cannot be read."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    try:
        return ast.parse(src)
    except (SyntaxError, IndentationError):
        pass
    if getattr(fn, "__name__", "") != "<lambda>" or "lambda" not in src:
        return None
    text = src[src.index("lambda"):].rstrip()
    for end in range(len(text), 0, -1):  # (the longest prefix that parses: the lambda and what follows it)
        try:
            return ast.parse(text[:end])
        except (SyntaxError, IndentationError):
            continue
    return None


def _function_code(fn: Any, depth: int, seen: Set[Any]) -> Optional[Tuple[bool, Set[str]]]:
    """``(counted, names)`` of a function of the user's code: its own calls and products, and what it reaches
    (:func:`_reached_code`); ``None`` when its source cannot be read."""
    tree = _parsed(fn)
    if tree is None:
        return None
    counted, names = False, set()
    for node in ast.walk(tree):
        name = _call_name(node) if isinstance(node, ast.Call) else None
        if name is not None:
            names.add(name)
        counted = counted or _is_matmul(node) or name in _COUNTED_NAMES
    more_counted, more = _reached_code(fn, tree, depth, seen)
    return counted or more_counted, names | more


def _reached_code(fn: Any, tree: ast.AST, depth: int, seen: Set[Any]) -> Tuple[bool, Set[str]]:
    """What a method reaches beyond its own calls: ``(counted, names)``.

    * functions of the user's code it calls by a global name (``attend(q, k)``, ``utils.attend(q, k)``), also
      through a ``functools.partial``, a bound method of a global object or a decorator that wraps
      (``@torch.no_grad()``), read in turn (up to :data:`_HELPER_DEPTH` deep; not those of installed
      libraries, :func:`synopsloss.hooks.installed`): a product or pool in a helper is the method's own;
    * torch functions, tensor methods and operators it names other than by their own name (``pool =
      F.avg_pool2d``; ``from torch import matmul as mm``; ``operator.matmul``; ``torch.Tensor.bmm``): their real
      names;
    * functions it mentions without calling them (``pool = F.avg_pool2d`` then ``pool(x)``);
    * functions it closes over (a decorator's wrapper calling the method it wraps).
    """
    scope = getattr(fn, "__globals__", {})
    closure = getattr(fn, "__closure__", None)
    if closure:  # (a decorator's wrapper without functools.wraps calls the forward it closes over)
        scope = dict(scope)
        for name, cell in zip(fn.__code__.co_freevars, closure):
            try:
                scope[name] = cell.cell_contents
            except ValueError:  # (an empty cell)
                pass
    counted, names = False, set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):  # getattr(torch, "matmul"): that name
            names.add(node.args[1].value)
            counted = counted or node.args[1].value in _COUNTED_NAMES
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and not (
                isinstance(node.value, ast.Name) and node.value.id == "self"):
            names.add(node.attr)  # (a mention: a call or an alias)
            counted = counted or node.attr in _COUNTED_NAMES
        if not isinstance(node, (ast.Name, ast.Attribute)) or not isinstance(node.ctx, ast.Load):
            continue
        obj = _unwrapped(_resolve(node, scope))
        if obj is None or isinstance(obj, type) or not callable(obj):
            continue
        real = getattr(obj, "__name__", None)
        if isinstance(real, str) and (not inspect.isfunction(obj) or (obj.__module__ or "").startswith("torch")):
            names.add(real)  # a torch function, method or operator under another name: its own name
            counted = counted or real in _COUNTED_NAMES
            continue
        if (depth < _HELPER_DEPTH and inspect.isfunction(obj) and obj not in seen
                and not installed(obj.__code__.co_filename)):
            seen.add(obj)
            found = _function_code(obj, depth + 1, seen)
            if found is not None:
                counted = counted or found[0]
                names |= found[1]
    return counted, names


def _is_torch_class(cls: type) -> bool:
    mod = getattr(cls, "__module__", "") or ""
    if mod == "torch.nn.utils.parametrize":  # (ParametrizedX: made by torch around the user's class X)
        return all(_is_torch_class(b) for b in cls.__bases__)
    return mod == "torch" or mod.startswith("torch.")


def _own_params(module: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """A module's own parameters, with those of its parametrizations (``weight_norm``: original0/1)."""
    out = list(module.named_parameters(recurse=False))
    if parametrize.is_parametrized(module):
        out += [(f"parametrizations.{n}", p) for n, p in module.parametrizations.named_parameters()]
    return out


def _param_names(module: nn.Module) -> Set[str]:
    names = set(module._parameters)
    if parametrize.is_parametrized(module):
        names |= set(module.parametrizations.keys())
    return names


def _rule_class(module: nn.Module, rules: Dict[type, Rule]) -> Optional[type]:
    """The class in ``module``'s MRO that its synapse rule is registered for."""
    table = dict(rules)
    for k in registry.SYNAPSE_RULES:
        cls = registry.resolve(k)
        if cls is not None:
            table.setdefault(cls, registry.SYNAPSE_RULES[k])
    return next((c for c in type(module).__mro__ if c in table), None)


#: whether a tensor is a vmap batch (its storage cannot be read)
_IS_BATCHED = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", lambda t: False)


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _is_lazy(t: Tensor) -> bool:
    """An uninitialised parameter or buffer of a lazy module (``nn.LazyLinear`` before its first call)."""
    return isinstance(t, nn.parameter.UninitializedTensorMixin)


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


def _tensor_args(args: tuple, kwargs: dict) -> Iterator[Tensor]:
    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, Tensor))
    for a in kwargs.values():
        if isinstance(a, Tensor):
            yield a


def _lead(c: OpCount, tensors: List[Tensor]) -> Optional[Tuple[int, ...]]:
    """The leading (row) dims of the call's activation operand: ``(T, B, heads)`` of a spike product, ``(B, N)``
    of a linear on tokens (the counter reads time steps from them); ``None`` when no operand ends in
    ``in_shape`` with exactly ``rows`` rows (broadcast batch dims)."""
    n = len(c.in_shape)
    for t in tensors:
        if t.dim() >= n and tuple(t.shape[t.dim() - n:]) == tuple(c.in_shape):
            lead = tuple(int(s) for s in t.shape[:t.dim() - n])
            size = 1
            for s in lead:
                size *= s
            if size == c.rows:
                return lead
    return None


def _row_dims(c: OpCount, tensors: List[Tensor]) -> Tuple[int, ...]:
    """A product's batch dims for its per-sample split: its own, or, when they are one folded dim (``bmm`` of
    ``[T*B*heads, N, d]``), the leading dims of the tensor an operand is a flattened view of (``(T, B, heads)``)."""
    dims = c.row_dims
    if len(dims) != 1 or not dims[0]:
        return dims
    for t in tensors:
        if t.dim() >= 1 and int(t.shape[0]) == dims[0]:
            better = view_lead(t, t.numel() // dims[0], dims[0], dims)
            if better != dims:
                return better
    return dims


def _param_of(t: Tensor) -> Optional[nn.Parameter]:
    if isinstance(t, nn.Parameter):
        return t
    base = getattr(t, "_base", None)
    return base if isinstance(base, nn.Parameter) else None


class _Mode(PackageMode):
    """The counting mode: every watched op is offered to the counting scopes, every other op runs unchanged.

    One mode for the process, pushed while at least one scope counts (two counters on one model
    push and pop their frames in interleaved order; one shared mode keeps the stack balanced). Its scopes and
    its place on the stack are per thread, as torch's function-mode stack is.
    """

    def __init__(self) -> None:
        super().__init__()
        # per thread, as torch's function-mode stack is: the scopes whose innermost frame counts on this thread,
        # and whether the mode is on this thread's stack (two threads counting at once share no frame)
        self._local = threading.local()

    @property
    def scopes(self) -> List["OpScope"]:
        local = self._local
        try:
            return local.scopes
        except AttributeError:
            local.scopes, local.pushed = [], False
            return local.scopes

    @property
    def pushed(self) -> bool:
        return getattr(self._local, "pushed", False)

    @pushed.setter
    def pushed(self, value: bool) -> None:
        self._local.pushed = value

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        if kwargs is None:
            kwargs = {}
        if _DYNAMO():  # (traced by torch.compile: its ops are not counted, as _enter warns)
            return func(*args, **kwargs)
        mine = self.scopes  # (this thread's)
        if func not in _WATCHED:
            out = func(*args, **kwargs)
            if mine:  # (follow weights made of parameters: autograd's record misses scalars and masks)
                for scope in mine:
                    if scope._counting():
                        scope._follow(args, kwargs, out)
            return out
        scopes = [s for s in mine if s._counting()]
        body = TRANSPARENT_OPS.get(func)
        if body is not None and scopes:
            with self:  # re-entered: the composite's inner ops are counted one by one
                return body(*args, **kwargs)
        out = func(*args, **kwargs)
        if scopes and not OWN.depth and not made_by_package(sys._getframe(1)):
            for scope in scopes:  # (not the counter's own ops: its hooks, e.g. neuron statistics, and reductions)
                scope._on_op(func, args, kwargs, out)
                scope._follow(args, kwargs, out)  # (a product of weights, U @ V, is a weight)
        return out

    def want(self, scope: "OpScope", counting: bool) -> None:
        """Whether ``scope``'s innermost frame counts; push or pop the mode accordingly."""
        scopes = self.scopes  # (this thread's)
        if counting:
            if scope not in scopes:
                scopes.append(scope)
        elif scope in scopes:
            scopes.remove(scope)
        if scopes and not self.pushed:
            self.__enter__()
            self.pushed = True
        elif not scopes and self.pushed:
            take_off(self)  # (wherever it is: a mode opened above it inside the forward stays open)
            self.pushed = False


_MODE = _Mode()


@dataclass
class _Frame:
    """One forward call of a module with a frame (the scope stack)."""

    name: str
    module: Any  # weakref to the module
    counting: bool  # ops are counted here (else: a child counted by its module hook, a neuron, a paused counter)
    own_rule: bool = False  # a rule-(3) module: its weight ops go to its own row
    seen: Dict[str, int] = field(default_factory=dict)  # op -> occurrences in this call


class OpScope:
    """Chooses the modules counted op by op, pushes the counting mode inside them and attributes their ops.

    Owned by a :class:`~synopsloss.SynOpsCounter` (``counter._scope``); holds
    it weakly. The counter asks :meth:`scoped_rule` / :meth:`scoped_params`
    while it attaches its module hooks, then calls :meth:`attach`.

    Parameters
    ----------
    counter
        The owning counter (``_accumulate``, ``_warn_once``, ``_counting_enabled``, ``_data_storages``,
        ``strict``, ``model``).
    ops
        ``"auto"``, ``"all"`` or ``"none"`` (see the module docstring).
    """

    def __init__(self, counter: Any, ops: str) -> None:
        if not isinstance(ops, str):
            raise TypeError(f"ops must be one of {OPS_MODES} (a str), got {type(ops).__name__}")
        if ops not in OPS_MODES:
            raise ValueError(f"ops must be one of {OPS_MODES}, got {ops!r}")
        self.ops = ops
        self._counter = weakref.ref(counter)
        self._hooks = HookSet(self)
        self._stack: List[_Frame] = []
        self.rows: Dict[str, OpRow] = {}
        self.scoped: Dict[str, str] = {}  # module name -> why it is counted op by op
        self.own_rule: Set[str] = set()  # rule modules counted op by op (rule 3)
        self.param_modules: Dict[str, nn.Module] = {}  # scoped modules with parameters and no rule
        self._opaque: Set[str] = set()  # modules named as unsupported, whose products are not counted (opaque)
        # without gradients: tensors a counting frame computed from parameters only, id -> (weakref, parameter ids)
        self._made: Dict[int, Tuple[Any, Tuple[int, ...]]] = {}
        self._pruned: List[Tuple[Any, str]] = []  # (module, name) of weights torch.nn.utils.prune computes
        self.used_params: Set[int] = set()  # ids of parameters a counted op used as (or to build) its weight
        self.weight_frames: Set[str] = set()  # frames in which a weight op was counted
        self._owner: Dict[int, str] = {}  # id(parameter) -> rule layer owning it
        self._own_storages: Set[int] = set()  # storages of the model's parameters: weights
        self._buffer_storages: Set[int] = set()  # of its buffers (no neuron's): allowed in a weight's preparation
        self._buffer_ids: Set[int] = set()  # the same buffers' ids (a cheap first test under gradients)
        self._probe: Optional[Tuple[Any, int]] = None
        self._leaves: List[int] = []
        self._warned_ops: Set[Tuple[str, str]] = set()

    # ------------------------------------------------------------------ choosing

    def reset_plan(self) -> None:
        """Forget which modules are scoped (before the counter attaches again); rows and usage stay."""
        self.remove()
        self.scoped.clear()
        self.own_rule.clear()
        self.param_modules.clear()

    def scoped_rule(self, name: str, module: nn.Module, rule: Rule, rules: Dict[type, Rule]) -> bool:
        """Rule 3: a map-rule module whose class overrides ``forward`` (or whose instance has its own) is counted op
        by op."""
        if self.ops == "none" or rule.fanout is None:
            return False
        base = _rule_class(module, rules)
        if base is not None and "forward" in vars(module):  # a forward set on the instance (a masking tool's patch)
            self.scoped[name] = "a forward set on the instance"
            self.own_rule.add(name)
            return True
        if base is None or type(module).forward is base.forward:
            return False
        if any(type(module).forward is c.forward for c in registry._types(registry.RULE_FORWARD_AS_IS)):
            return False  # a listed type's own forward (a subclass overriding it again is counted op by op)
        self.scoped[name] = f"{type(module).__name__} overrides forward"
        self.own_rule.add(name)
        return True

    def scoped_params(self, name: str, module: nn.Module) -> bool:
        """Rules 1 and 2 for a module with parameters and no rule: whether it is accounted for (its ops will be
        counted, or its class only adds its parameters to activations or joins them: no synapses)."""
        if self.ops == "none":
            return False
        if isinstance(module, registry._types(registry.OP_SCOPED)):
            self.scoped[name] = "registry.OP_SCOPED"
        elif isinstance(module, torch.fx.GraphModule):
            self.scoped[name] = "a torch.fx GraphModule (its generated forward runs the traced ops)"
        elif isinstance(module, (nn.ParameterList, nn.ParameterDict)):
            # (no forward: its parameters are used by its parent's code, counted op by op there; named when the
            # counts are read if no counted op used them)
            self.param_modules[name] = module
            return True
        elif _is_torch_class(type(module)):
            return False
        else:
            code = class_code(type(module))
            if code is not None and not code.counted and not (code.counted_self_calls - set(module._modules)):
                params = _param_names(module)
                if params and params <= code.additive:
                    return True  # added or joined only (a positional embedding, a class token): no synapses
                if not (params & code.passed) - code.additive:
                    return False
            self.scoped[name] = "parameters without a rule"
        self.param_modules[name] = module
        return True

    def opaque(self, name: str, module: nn.Module) -> None:
        """A module whose synapses cannot be counted (:data:`synopsloss.registry.UNCOUNTABLE`, named as unsupported):
        inside a module counted op by op its forward gets a frame that counts nothing."""
        self.scoped.pop(name, None)
        self._opaque.add(name)

    def _wants(self, module: nn.Module) -> Optional[str]:
        """Rules 1 and 4 for modules without parameters of their own, and for neuron modules."""
        if isinstance(module, registry._types(registry.OP_SCOPED)):
            return "registry.OP_SCOPED"
        if isinstance(module, torch.fx.GraphModule):
            return "a torch.fx GraphModule (its generated forward runs the traced ops)"
        if _is_torch_class(type(module)):
            return None
        neuron = registry.neuron_library(module) is not None
        if neuron and registry.neuron_ops_no_synapse(module):
            return None  # its own products are neuron dynamics (registry.NEURON_OPS_NO_SYNAPSE)
        code = class_code(type(module))
        if code is None:  # its source cannot be read (a class made by exec): its products are counted op by op
            return "its forward's source cannot be read" if type(module).forward is not nn.Module.forward else None
        if code.counted or (code.counted_self_calls - set(module._modules)):
            return "a neuron that runs a counted op in its own code" if neuron else "runs a counted op in its own code"
        for child_name, method in code.child_methods:  # (its ops run in this module's forward: counted here)
            child = module._modules.get(child_name, vars(module).get(child_name))  # (a child, or a helper object)
            fn = getattr(type(child), method, None) if child is not None and not _is_torch_class(type(child)) else None
            if inspect.isfunction(fn):
                found = _function_code(fn, 0, set())
                if found is not None and found[0]:
                    return f"calls {child_name}.{method}(), which runs a counted op"
        if not neuron and any(_callable_counts(v) for k, v in vars(module).items()
                              if not k.startswith("_") and callable(v) and not isinstance(v, (nn.Module, type))):
            return "holds a callable that runs a counted op"  # self.score = Score(); self.mm = partial(torch.matmul)
        return None

    # ------------------------------------------------------------------ attaching

    def attach(self, model: nn.Module, layers: Dict[str, Any]) -> None:
        """Register the frame hooks. ``layers``: the counter's ``{name: _Layer}`` (rule modules)."""
        self.remove()
        self._owner = {}
        for lname, layer in layers.items():
            for pname, p in _own_params(layer.module):
                if not pname.startswith("bias"):
                    self._owner.setdefault(id(p), lname)
        if self.ops == "none":
            return
        if self.ops == "all":
            self.scoped.setdefault("", "ops='all'")
        modules = dict(model.named_modules())
        self._pruned = [(weakref.ref(m), h._tensor_name) for m in modules.values() for h in m._forward_pre_hooks.values()
                        for h in (getattr(h, "_pruning_methods", None) or (h,))
                        if isinstance(h, prune.BasePruningMethod)]
        for name, module in modules.items():
            if name not in self.scoped and not (name in layers) and (
                    registry.neuron_library(module) is not None or not any(True for _ in module.parameters(False))
                    or registry.has_no_synapse(module)):  # (declared synapse-free: its activation products count)
                why = self._wants(module)
                if why is not None:
                    self.scoped[name] = why
        if not self.scoped:
            return
        roots = sorted(self.scoped, key=len)
        inside: Set[str] = set()
        for name in modules:
            if any(r == "" or name == r or name.startswith(r + ".") for r in roots):
                inside.add(name)
        for name, module in modules.items():
            if name not in inside:
                continue
            if name in self._opaque:
                kind = "quiet"  # named as unsupported: its products are not counted
            elif name in self.scoped:
                kind = "count"
            elif name in layers:
                kind = "quiet"  # counted by its module hook
            elif registry.neuron_library(module) is not None and not any(True for _ in module.parameters()):
                kind = "quiet"
            elif self.ops == "all":
                kind = "count"  # every module gets a frame: ops go to the innermost module
            else:
                continue
            self._hooks.pre(module, functools.partial(OpScope._enter, name=name, counting=kind == "count"))
            self._hooks.forward(module, OpScope._exit, always_call=True)
        self._refresh_storages(model, force=True)

    def remove(self) -> None:
        """Take the frame hooks off (and the mode, if a forward was interrupted inside a scope)."""
        self._hooks.remove()
        self._stack.clear()
        _MODE.want(self, False)

    @property
    def active(self) -> bool:
        """Whether any module is counted op by op."""
        return bool(self._hooks.attached)

    def _refresh_storages(self, model: nn.Module, force: bool = False) -> None:
        """Storages of the model's parameters and buffers (neuron buffers excluded), re-read if they moved."""
        if not force and self._probe is not None:
            ref, ptr = self._probe
            p = ref()
            if p is not None and p.device.type != "meta" and _storage(p) == ptr:
                return
        own: Set[int] = set()
        buffers: Set[int] = set()
        probe = None
        lazy = False
        for m in model.modules():
            neuron = registry.neuron_library(m) is not None
            for p in m.parameters(recurse=False):
                lazy = lazy or _is_lazy(p)
                if p.device.type != "meta" and not _is_lazy(p) and p.layout == torch.strided:
                    own.add(_storage(p))
                    probe = p if probe is None else probe
            if not neuron:
                buffers.update(_storage(b) for b in m.buffers(recurse=False) if b.device.type != "meta"
                               and not _is_lazy(b) and b.layout == torch.strided)
        self._own_storages = own
        self._buffer_storages = buffers
        self._buffer_ids = {id(b) for m in model.modules() if registry.neuron_library(m) is None
                            for b in m.buffers(recurse=False)}
        # a lazy module's parameters appear in its first call: read them again at every forward until then
        self._probe = (weakref.ref(probe), _storage(probe)) if probe is not None and not lazy else None

    # ------------------------------------------------------------------ the stack

    def _counting(self) -> bool:
        return bool(self._stack) and self._stack[-1].counting and not _in_backward()

    def _enter(self, module: nn.Module, args: tuple, *, name: str, counting: bool) -> None:
        counter = self._counter()
        enabled = counter is not None and counter.counting
        if COMPILED.depth and counting and enabled:  # (its ops run in compiled code: the function mode sees none)
            counter.warn(
                f"synopsloss: {name or '<root>'} ({type(module).__name__}) is counted op by op (its activation "
                "products and functional weight ops), which cannot run inside torch.compile: those synops are NOT "
                "counted while it is compiled (module layers still are). Compile after counter.remove(), or count "
                "with an uncompiled model that shares the parameters.", stacklevel=5)
        if not self._stack:
            self._made.clear()
        if not self._stack and enabled and counting:
            self._refresh_storages(counter.model)
        frame = _Frame(name, weakref.ref(module), counting and enabled, name in self.own_rule)
        self._stack.append(frame)
        _MODE.want(self, frame.counting)

    def _exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        stack = self._stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].module() is module:
                del stack[i:]
                break
        _MODE.want(self, bool(stack) and stack[-1].counting)

    # ------------------------------------------------------------------ ops

    def _on_op(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        """Count one watched op that ran inside this scope's innermost (counting) frame."""
        frame = self._stack[-1]
        counter = self._counter()
        if counter is None:
            return
        self._leaves = []
        if any(_IS_BATCHED(t) for t in _tensor_args(args, kwargs)):
            raise RuntimeError(
                f"synopsloss: layer {frame.name or '<root>'!r} ran inside a torch.func transform (vmap / grad / "
                "jacrev); the counter cannot count per-sample slices of a transformed batch. Run the model outside "
                "the transform to count it, or wrap the transformed call in counter.paused().")
        try:
            counts = record_op(func, args, kwargs, out, is_weight=self._is_weight)
        except UncountableOpError as err:
            self._flag(counter, frame, func, err)
            return
        except (TypeError, ValueError) as err:
            raise type(err)(f"synopsloss: module {frame.name or '<root>'!r}: {err}") from err
        if counts:
            self._record(counter, frame, counts, args, kwargs)

    def _is_weight(self, t: Tensor) -> bool:
        if t.device.type == "meta" or t.layout != torch.strided or _is_lazy(t):
            return False  # (a sparse operand is then refused by the op's rule, with its message)
        if _storage(t) in self._own_storages:
            p = _param_of(t)
            if p is not None:
                self._leaves.append(id(p))
            return True
        made = self._made.get(id(t))
        if made is not None and made[0]() is t and made[1]:  # what the mode saw the frame make of parameters
            self._leaves.extend(made[1])  # (``w * 2``, ``torch.where(w.abs() > t, w, 0.)``: scalars and masks
            return True                   # that autograd's record does not show)
        if not torch.is_grad_enabled():  # (no autograd record: what the mode saw the frame compute)
            made = self._made.get(id(t))
            if made is None or made[0]() is not t or not made[1]:
                pruned = self._pruned_leaf(t)
                if pruned is None:
                    return False
                made = (None, (pruned,))
            self._leaves.extend(made[1])
            return True
        if t.grad_fn is None:
            return False
        return self._derived(t)

    def _pruned_leaf(self, t: Tensor) -> Optional[int]:
        """The id of the parameter ``<name>_orig`` when ``t`` is the weight ``torch.nn.utils.prune`` computed for
        ``module.<name>`` before the forward (its pre-hook runs outside the frame: without gradients the product of
        the parameter and its mask has no record)."""
        for ref, name in self._pruned:
            module = ref()
            if module is not None and module.__dict__.get(name) is t:
                p = module._parameters.get(name + "_orig")
                return id(p) if p is not None else None
        return None

    def _follow(self, args: tuple, kwargs: dict, out: Any) -> None:
        """An op that the mode passed through in a counting frame (with or without gradients): its outputs are weights
        made of parameters when its tensors are parameters, buffers, scalars or such weights (the rule of
        :meth:`_derived`, which reads autograd's record when there is one): ``self.w * self.mask`` then ``.t()``."""
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if out is not None and not any(isinstance(o, Tensor) for o in outs):
            return  # (``x.shape``, ``x.dim()``: nothing made; ``W[:] = x`` returns None and is read)
        if torch.is_grad_enabled():  # (the activations' ops, most of them, are passed over by identity alone)
            made = self._made
            for t in _tensor_args(args, kwargs):
                if (id(t) in made or isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter)
                        or id(t) in self._buffer_ids):
                    break
            else:
                return
        leaves: List[int] = []
        ok = True
        for t in _tensor_args(args, kwargs):
            made = self._made.get(id(t))
            if made is not None and made[0]() is t:
                leaves.extend(made[1])
                continue
            if t.layout != torch.strided or t.device.type == "meta" or _is_lazy(t):
                ok = False
                break
            try:
                st = _storage(t)
            except RuntimeError:  # (a tensor without memory: torch.compile's fake tensors)
                ok = False
                break
            pruned = self._pruned_leaf(t)
            if pruned is not None:
                leaves.append(pruned)
            elif st in self._own_storages:
                p = _param_of(t)
                if p is None:
                    ok = False
                    break
                leaves.append(id(p))
            elif st not in self._buffer_storages:
                ok = False  # data or an activation (one value of it too: x.mean()): what it makes is no weight
                break
        if not ok:
            for t in _tensor_args(args, kwargs):  # (an in-place op or setitem that writes data into one of them)
                self._made.pop(id(t), None)
        for o in outs:
            if isinstance(o, Tensor):
                if ok and leaves:
                    if len(self._made) >= MAX_MADE:
                        self._made.clear()
                    self._made[id(o)] = (weakref.ref(o), tuple(leaves))
                else:
                    self._made.pop(id(o), None)  # (an in-place op that mixed data into one)

    def _derived(self, t: Tensor) -> bool:
        """Whether autograd recorded ``t`` as computed from parameters only (bounded walk)."""
        leaves: List[int] = []
        todo = [t.grad_fn]
        seen: Set[int] = set()
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if len(seen) > MAX_WALK:
                return False
            kind = type(node).__name__
            if kind == "AccumulateGrad":
                var = node.variable
                if not isinstance(var, nn.Parameter) or _storage(var) not in self._own_storages:
                    return False
                leaves.append(id(var))
                continue
            if kind not in WEIGHT_PREP_NODES:
                return False
            for i, (nxt, _) in enumerate(node.next_functions):
                if nxt is not None:
                    todo.append(nxt)
                    continue
                # an input without grad: a buffer or a scalar is fine, anything else may be data
                try:
                    saved = getattr(node, "_saved_self" if i == 0 else "_saved_other", None)
                except RuntimeError:  # freed by an earlier backward
                    return False
                if not isinstance(saved, Tensor) or not (_storage(saved) in self._own_storages
                                                         or _storage(saved) in self._buffer_storages):
                    return False  # (a mask buffer may shape a weight; a buffer alone is none: it may hold state;
                    # one value of the data, x.mean(), is no constant)
        if not leaves:
            return False
        self._leaves.extend(leaves)
        return True

    def _record(self, counter: Any, frame: _Frame, counts: List[OpCount], args: tuple, kwargs: dict) -> None:
        tensors = list(_tensor_args(args, kwargs))
        owner = None
        if any(c.weighted for c in counts):
            for t in tensors:
                p = _param_of(t)
                if p is not None:
                    self._leaves.append(id(p))
                    owner = owner or self._owner.get(id(p))
            self.used_params.update(self._leaves)
            self.weight_frames.add(frame.name)
        data = counter.is_data(tensors)
        for c in counts:
            if c.weighted and owner is not None:
                row = owner
            elif c.weighted and frame.own_rule:
                row = frame.name
            else:
                k = frame.seen.get(c.op, 0)
                frame.seen[c.op] = k + 1
                base = f"{frame.name}.{c.op}" if frame.name else c.op
                row = base if k == 0 else f"{base}.{k}"
                if row not in self.rows:
                    kind = registry.LayerKind.SYNAPTIC if c.weighted else registry.LayerKind.PRODUCT
                    self.rows[row] = OpRow(c.op, kind, frame.name)
            lead = _lead(c, tensors)
            if c.call is not None:
                counter.record_call(row, c.call, in_shape=tuple(c.in_shape), out_shape=tuple(c.out_shape),
                                    data=data, lead=lead)
                continue
            n_el = 1
            for s in c.in_shape:
                n_el *= int(s)
            counter.accumulate(row, OpCounts(
                synops=c.synops, dense=c.dense, effective=c.effective, spiking=c.spiking, rows=c.rows,
                in_shape=tuple(c.in_shape), out_shape=tuple(c.out_shape), input_sum=c.input_sum,
                input_nonzero=c.input_nonzero, in_neurons=n_el, later=c.later, device=c.device,
                held_bytes=sum(t.numel() * t.element_size() for t in tensors) if c.later is not None else 0,
                row_dims=_row_dims(c, tensors), integer=c.integer,
            ), data=data, lead=lead)

    def _flag(self, counter: Any, frame: _Frame, func: Callable, err: Exception) -> None:
        op = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        msg = (f"synopsloss: module {frame.name or '<root>'!r} ran {op}, whose synapses are NOT counted: {err}")
        if counter.strict:
            raise UncountableOpError(msg) from err
        if (frame.name, op) not in self._warned_ops:
            self._warned_ops.add((frame.name, op))
            counter.warn(msg, UnsupportedLayerWarning, stacklevel=6)

    # ------------------------------------------------------------------ reading

    def used(self, module: nn.Module) -> bool:
        """Whether a counted op used one of ``module``'s own parameters as (or to build) its weight."""
        return any(id(p) in self.used_params for _, p in _own_params(module))

    def silent(self) -> List[str]:
        """Scoped modules with parameters that ran no counted weight op with any of them, as ``'name (Type)'``."""
        return [f"{n or '<root>'} ({type(m).__name__})" for n, m in self.param_modules.items()
                if n not in self.weight_frames and not self.used(m)]


def compiled_submodules(model: nn.Module) -> List[str]:
    """Names of ``torch.compile``-d submodules (``OptimizedModule``) of ``model``; never imports dynamo.

    Example
    -------
    >>> import torch
    >>> compiled_submodules(torch.nn.Sequential(torch.nn.Linear(1, 1)))
    []
    """
    mod = sys.modules.get("torch._dynamo.eval_frame")
    cls = getattr(mod, "OptimizedModule", None) if mod is not None else None
    if cls is None:
        return []
    return [n or "<root>" for n, m in model.named_modules() if isinstance(m, cls)]
