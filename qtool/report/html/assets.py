"""The page's inline stylesheet and script (nothing is fetched when the report is opened)."""

from __future__ import annotations

CSS = """
:root{--fg:#1d232a;--muted:#5b6570;--line:#d9dee3;--bg:#f6f8fa;--bad:#b3261e;--ok:#1b7f3b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 margin:0;padding:0 28px 40px}
header{border-bottom:1px solid var(--line);padding:18px 0 10px;margin-bottom:8px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0}
.sub,.muted{color:var(--muted)}
nav{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid var(--line);
 z-index:2}
nav a{margin-right:16px;color:#0b5cad;text-decoration:none}
section{margin:18px 0}
details>summary{cursor:pointer;padding:6px 0}
details>summary h2{display:inline}
table{border-collapse:collapse;margin:8px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{background:none;color:var(--muted);font-weight:500}
table.sortable th[data-sort]{cursor:pointer}
table.sortable th[data-sort]::after{content:" ⇅";color:#9aa4ae;font-weight:400}
table.sortable th[data-dir=asc]::after{content:" ▲";color:var(--fg)}
table.sortable th[data-dir=desc]::after{content:" ▼";color:var(--fg)}
table.main>tbody>tr:hover{background:#fbfcfd}
table.methods{margin:0}
table.methods td{border:0;padding:1px 6px;font-size:12.5px}
table.methods tr.chosen td{font-weight:700}
code,.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
 overflow-wrap:anywhere}
td.name{max-width:300px;min-width:160px}
.scroll{overflow-x:auto;max-width:100%}
details.flags summary{padding:0}
details.flags ul{margin:2px 0;padding-left:18px;font-size:12.5px}
.sw{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:5px}
.sw.chosen{height:7px}
.bad{color:var(--bad);font-weight:600}
.badge{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;
 color:#fff}
.badge.ok{background:var(--ok)}.badge.fail{background:var(--bad)}.badge.kept{background:#8a5a00}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
.legend span{margin-right:14px;white-space:nowrap}
input.filter{padding:4px 8px;width:320px;margin:4px 0;font:inherit}
img.fig{display:block;border:1px solid var(--line);background:#fff}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""


# Click a header with data-sort ("num" or "text") to sort its table's body rows by the cells'
# data-v (or their text); inputs with data-filter hide rows whose data-key lacks the text.
JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('thead th[data-sort]').forEach(function(th){
    th.addEventListener('click',function(){
      var col=Array.prototype.indexOf.call(th.parentNode.children,th);
      var numeric=th.dataset.sort==='num';
      var dir=th.dataset.dir==='desc'?'asc':(th.dataset.dir==='asc'?'desc':(numeric?'desc':'asc'));
      table.querySelectorAll('thead th').forEach(function(o){delete o.dataset.dir;});
      th.dataset.dir=dir;
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(row){var c=row.cells[col];var v=c.dataset.v!==undefined?c.dataset.v:c.textContent;
        return numeric?(v===''?NaN:parseFloat(v)):v.toLowerCase();}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(numeric){if(isNaN(x))return isNaN(y)?0:1;if(isNaN(y))return -1;return dir==='asc'?x-y:y-x;}
        return dir==='asc'?x.localeCompare(y):y.localeCompare(x);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
document.querySelectorAll('input[data-filter]').forEach(function(input){
  input.addEventListener('input',function(){
    var text=input.value.toLowerCase();
    document.querySelectorAll('#'+input.dataset.filter+' > tbody > tr').forEach(function(row){
      row.style.display=(row.dataset.key||'').toLowerCase().indexOf(text)>=0?'':'none';
    });
  });
});
"""
