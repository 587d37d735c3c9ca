"""Contract tests for the private PyTorch APIs graphremat relies on (graphremat/_private.py).

If a torch upgrade breaks one of these, this file says which assumption moved."""

import inspect

import torch

from graphremat import _private as P


def test_extract_fwd_bwd_modules_signature():
    params = inspect.signature(P._extract_fwd_bwd_modules).parameters
    for name in (
        "joint_module",
        "saved_values",
        "saved_sym_nodes",
        "num_fwd_outputs",
        "static_lifetime_input_nodes",
    ):
        assert name in params


def test_saved_tensor_no_vc_check_flag_is_honoured():
    src = inspect.getsource(P._extract_fwd_bwd_modules)
    assert "saved_tensor_with_no_vc_check" in src


def test_placeholder_classifiers():
    g = torch.fx.Graph()
    primal = g.placeholder("primals_1")
    tangent = g.placeholder("tangents_1")
    assert P._is_primal(primal) and not P._is_primal(tangent)
    assert P._is_tangent(tangent) and not P._is_tangent(primal)


def test_custom_partitioner_hook_exists():
    from torch._inductor import config

    assert hasattr(config, "custom_partitioner_fn")
    assert hasattr(config, "reorder_for_peak_memory")
    assert hasattr(P.CustomPartitionerFn, "uuid")


def test_flop_registry_has_matmul_and_conv():
    aten = torch.ops.aten
    assert aten.mm in P.flop_registry and aten.convolution in P.flop_registry


def test_storage_identity_of_fake_views():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(4, 4)
        v = x.view(16)
        y = x + 1
    assert P.StorageWeakRef(v.untyped_storage()) == P.StorageWeakRef(x.untyped_storage())
    assert P.StorageWeakRef(y.untyped_storage()) != P.StorageWeakRef(x.untyped_storage())


def test_unset_fake_temporarily_is_a_context_manager():
    with P.unset_fake_temporarily():
        assert torch.ones(1).sum().item() == 1.0


def test_boxed_nop_and_aot_autograd():
    assert callable(P.boxed_nop) and callable(P.aot_autograd)
    assert "num_fwd_outputs" in inspect.signature(P.default_partition).parameters


def test_region_keys_and_graph_break_reasons():
    """graphremat.regions keys regions by Dynamo's frame id (and DDPOptimizer's bucket), and the
    string backend reads Dynamo's graph-break reason off the compiled GraphModule."""
    import inspect as _inspect

    from torch._dynamo import output_graph

    assert P.CompileContext.current_compile_id() is None  # outside a compile
    assert P.TracingContext.try_get() is None
    assert "ddp_optimizer_ctx" in _inspect.getsource(P.TracingContext.__init__)
    assert "gm.compile_subgraph_reason" in _inspect.getsource(output_graph)


def test_inductor_wrapper_lines_the_replay_reads():
    """graphremat._private.wrapper_peak_memory replays Inductor's planned wrapper lines."""
    import dataclasses

    from torch._inductor.codegen import wrapper as W

    assert callable(W.PythonWrapperCodegen.memory_plan_reuse)
    assert issubclass(W.SubgraphPythonWrapperCodegen, W.PythonWrapperCodegen)
    fields = {
        W.AllocateLine: {"node"},
        W.ReuseLine: {"node", "reused_as", "delete_old"},
        W.FreeIfNotReusedLine: {"node", "is_reused"},
        W.FreeLine: {"node"},
        W.ReinterpretLine: {"node", "reused_as"},
        W.ExternKernelAllocLine: {"node"},
        W.ExternKernelOutLine: {"node"},
        W.MultiOutputLine: {"result_name", "arg_name"},
    }
    for cls, names in fields.items():
        assert names <= {f.name for f in dataclasses.fields(cls)}, cls.__name__


def test_inductor_fusion_choices_the_backend_restricts():
    """graphremat._private.no_distant_vertical_fusion installs a choices handler whose
    can_fuse_vertical refuses pairs the scheduler calls long distant (a compile under it is
    exercised by the Inductor tests), and restores the previous handler."""
    import inspect

    from torch._inductor.choices import InductorChoices
    from torch._inductor.scheduler import Scheduler
    from torch._inductor.virtualized import V

    from graphremat import _private as P

    params = list(inspect.signature(InductorChoices.can_fuse_vertical).parameters)
    assert params == ["scheduler", "node1", "node2", "shared_data_score"]
    assert callable(Scheduler.are_long_distant_nodes)
    before = V.choices

    class Node:
        def __init__(self, order):
            self.min_order = self.max_order = order

    scheduler = Scheduler.__new__(Scheduler)  # are_long_distant_nodes reads only the orders
    with P.no_distant_vertical_fusion():
        assert V.choices is not before and isinstance(V.choices, type(before))
        assert not V.choices.can_fuse_vertical(scheduler, Node(0), Node(100), 1)
        assert V.choices.can_fuse_vertical(scheduler, Node(0), Node(3), 1)
    assert V.choices is before


def test_dynamo_names_the_code_it_traces_and_resume_functions_their_origin():
    """graphremat.regions predicts a region's runs per step from the code Dynamo traced and,
    for a resume function after a graph break, the function it continues."""
    from graphremat.regions import _original_code

    def f(x):
        y = x.sin()
        torch._dynamo.graph_break()
        return y.cos()

    codes = []

    def backend(gm, example_inputs):
        codes.append(P.TracingContext.get_traced_code()[0])
        return gm.forward

    torch._dynamo.reset()
    torch.compile(f, backend=backend)(torch.ones(3))
    assert codes[0] is f.__code__
    assert codes[1] is not f.__code__ and _original_code(codes[1]) is f.__code__


def test_profiler_enabled_tracks_a_profiler_session():
    """graphremat.calibrate does not start a second profiler inside a caller's (it would end
    the caller's session: measure_peak_memory around a step that compiles)."""
    assert not P.profiler_enabled()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert P.profiler_enabled()
    assert not P.profiler_enabled()


def test_outside_python_dispatch_leaves_the_python_keys_a_partitioner_runs_under():
    """graphremat's plan broadcast (planner._broadcast_from_rank0) runs in the partitioner,
    where AOTAutograd has the Python dispatcher on; a gloo collective there deadlocked (see
    P.outside_python_dispatch). Inside the guard none of the Python keys is on (included and
    not excluded); after it they are back."""
    K = torch._C.DispatchKey
    python_keys = (K.Python, K.PythonTLSSnapshot, K.PythonDispatcher)
    seen = {}

    def partition(joint, inputs, **kwargs):
        seen["before"] = torch._C._dispatch_tls_local_include_set()
        with P.outside_python_dispatch():
            seen["inside"] = (
                torch._C._dispatch_tls_local_include_set(),
                torch._C._dispatch_tls_local_exclude_set(),
            )
            seen["sum"] = (torch.ones(3) + 1).sum().item()  # real tensors still compute
        seen["after"] = torch._C._dispatch_tls_local_include_set()
        return P.default_partition(joint, inputs, **kwargs)

    backend = P.aot_autograd(
        fw_compiler=P.boxed_nop, bw_compiler=P.boxed_nop, partition_fn=partition
    )
    torch._dynamo.reset()
    x = torch.randn(4, requires_grad=True)
    torch.compile(lambda t: (t.sin() * 2).sum(), backend=backend)(x).backward()
    assert seen["before"].has(K.PythonDispatcher)  # why the guard exists
    included, excluded = seen["inside"]
    assert not any(included.has(k) and not excluded.has(k) for k in python_keys)
    assert seen["after"] == seen["before"]
    assert seen["sum"] == 6.0
