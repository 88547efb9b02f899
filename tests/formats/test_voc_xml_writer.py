"""The fast VOC XML writer is byte-identical to ElementTree's output, and reads back."""

from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.formats.voc.xml import VocAnnotation, VocObject, _format_voc_xml_et, format_voc_xml

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
scalars = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=2),
                                                       st.dictionaries(names, inner, max_size=2)), max_leaves=5)
objects = st.builds(VocObject, name=st.text(min_size=1, max_size=6),
                    box=st.one_of(st.none(), st.tuples(*[st.floats(0, 1000, allow_nan=False)] * 4)),
                    attributes=st.dictionaries(names, values, max_size=3))
annotations = st.builds(VocAnnotation, filename=st.one_of(st.none(), st.text(max_size=8)),
                        width=st.one_of(st.none(), st.integers(1, 99)), height=st.integers(1, 99),
                        depth=st.one_of(st.none(), st.integers(1, 4)),
                        attributes=st.dictionaries(names, values, max_size=3), objects=st.lists(objects, max_size=3))


@settings(max_examples=300, deadline=None)
@given(annotations)
def test_fast_writer_matches_elementtree(ann):
    assert format_voc_xml(ann) == _format_voc_xml_et(ann)
